import type { Logger } from './logger.js';

export type Closer = () => Promise<void> | void;

/**
 * Owns shutdown order: resources register a closer when they start, and are closed in reverse order
 * (listeners before consumers before the database). Closing is idempotent.
 */
export class Lifecycle {
  private readonly closers: { name: string; close: Closer }[] = [];
  private closing: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  add(name: string, close: Closer): void {
    this.closers.push({ name, close });
  }

  get isClosing(): boolean {
    return this.closing !== undefined;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const { name, close } of [...this.closers].reverse()) {
        try {
          await close();
          this.log.debug({ resource: name }, 'closed');
        } catch (err) {
          this.log.error({ err, resource: name }, 'error while closing');
        }
      }
    })();
    return this.closing;
  }

  /**
   * Installs SIGTERM/SIGINT handlers that close everything, then exit 0 (a second signal exits at
   * once), and crash handlers that do the same and exit 1.
   */
  installSignalHandlers(onDone: (code: number) => void = (code) => process.exit(code), graceMs = 15_000): void {
    let signalled = false;
    const handler = (signal: NodeJS.Signals): void => {
      if (signalled) {
        this.log.warn({ signal }, 'second signal, exiting immediately');
        onDone(1);
        return;
      }
      signalled = true;
      this.log.info({ signal }, 'shutting down');
      const timer = setTimeout(() => {
        this.log.error({ graceMs }, 'graceful shutdown timed out');
        onDone(1);
      }, graceMs);
      timer.unref();
      void this.close().then(() => {
        clearTimeout(timer);
        this.log.info('shutdown complete');
        onDone(0);
      });
    };
    process.on('SIGTERM', handler);
    process.on('SIGINT', handler);
    // A bug must not leave listeners, sessions or the embedded database behind: log it, close what
    // can be closed, exit non-zero.
    const crash = (err: unknown, origin: string): void => {
      this.log.fatal({ err, origin }, 'crashed');
      const timer = setTimeout(() => onDone(1), graceMs);
      timer.unref();
      void this.close().then(() => onDone(1));
    };
    process.on('uncaughtException', (err) => crash(err, 'uncaughtException'));
    process.on('unhandledRejection', (reason) => crash(reason, 'unhandledRejection'));
  }
}
