import { TunnoxError } from '../../shared/platform/errors.js';

/** Refusals an operator can act on; the CLI prints the message and exits 1. */
export class CtlError extends TunnoxError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}
