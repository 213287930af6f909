import { DomainError } from '../platform/errors.js';

/**
 * Stable error codes raised by deciders and command services. Part of the public contract (API
 * problem objects): never rename one.
 */
export const DOMAIN_ERRORS = {
  sequenceExhausted: 'TNX_SEQUENCE_EXHAUSTED',
  userAlreadyExists: 'TNX_USER_ALREADY_EXISTS',
  userInvalid: 'TNX_USER_INVALID',
  userNotFound: 'TNX_USER_NOT_FOUND',
  clientAlreadyExists: 'TNX_CLIENT_ALREADY_EXISTS',
  clientInvalid: 'TNX_CLIENT_INVALID',
  clientNotFound: 'TNX_CLIENT_NOT_FOUND',
  anonymousIdsExhausted: 'TNX_CLIENT_ANONYMOUS_ID_COLLISIONS',
  mappingAlreadyExists: 'TNX_MAPPING_ALREADY_EXISTS',
  mappingInvalid: 'TNX_MAPPING_INVALID',
  mappingUnsupportedProtocol: 'TNX_MAPPING_UNSUPPORTED_PROTOCOL',
  mappingNotFound: 'TNX_MAPPING_NOT_FOUND',
  mappingUserNotFound: 'TNX_MAPPING_USER_NOT_FOUND',
  mappingClientNotFound: 'TNX_MAPPING_CLIENT_NOT_FOUND',
  mappingClientNotOwned: 'TNX_MAPPING_CLIENT_NOT_OWNED',
  portInUse: 'TNX_PORT_IN_USE',
  portNotHeld: 'TNX_PORT_NOT_HELD',
  portOutOfRange: 'TNX_PORT_OUT_OF_RANGE',
  portRangeExhausted: 'TNX_PORT_RANGE_EXHAUSTED',
  /** Another mapping of the same source client already listens on this local_port. */
  localPortTaken: 'TNX_LOCAL_PORT_TAKEN',
  localPortNotHeld: 'TNX_LOCAL_PORT_NOT_HELD',
  /** The user's quota (or the hard per-user cap) allows no more clients or mappings. */
  quotaExceeded: 'TNX_QUOTA_EXCEEDED',
  quotaInvalid: 'TNX_QUOTA_INVALID',
  usernameTaken: 'TNX_USERNAME_TAKEN',
  apiKeyExists: 'TNX_API_KEY_EXISTS',
  apiKeyNotFound: 'TNX_API_KEY_NOT_FOUND',
} as const;
export type DomainErrorCode = (typeof DOMAIN_ERRORS)[keyof typeof DOMAIN_ERRORS];

/**
 * The command breaks a rule no matter what the current state is (bad combination of fields,
 * reference to something that does not exist or belongs to someone else). Retrying the same
 * command can never succeed, unlike a plain DomainError (a conflict with the current state).
 * `field` names the offending input field (snake_case, as in the API) when there is one.
 */
export class RuleViolationError extends DomainError {
  readonly field: string | undefined;
  constructor(code: DomainErrorCode, message: string, field?: string) {
    super(code, message, field === undefined ? undefined : { details: { field } });
    this.field = field;
  }
}
