import { createServer, type AddressInfo, type ListenOptions, type Server } from 'node:net';

/**
 * Starts listening and settles on the outcome: resolves with the bound address, or rejects with
 * the first error (EADDRINUSE, EACCES, ...). Afterwards no 'error' listener of ours stays on the
 * server: the caller adds its own for errors that come later. Works for node:net and node:http
 * servers alike (both are net.Server).
 */
export function listen(server: Server, options: ListenOptions): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Asks the kernel for a free port on `host` (bound, read, released): for a child process to bind next. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  const { port } = await listen(server, { host, port: 0 });
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
