import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

/**
 * A TCP relay in front of an edge that can go silent: freeze() stops forwarding on every
 * connection it holds, in both directions, without closing any (a NAT or firewall that dropped
 * its state, or a hung middlebox: no FIN, no RST, nothing). Connections accepted after the freeze
 * are forwarded normally, so a peer that reconnects gets through.
 */
export interface SilentProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  freeze(): void;
  close(): Promise<void>;
}

export async function startSilentProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<SilentProxy> {
  const live = new Set<{ a: Socket; b: Socket; frozen: boolean }>();
  let accepted = 0;
  const server = createServer({ allowHalfOpen: true }, (a) => {
    accepted++;
    const b = connect({ host: targetHost, port: targetPort, allowHalfOpen: true });
    const pair = { a, b, frozen: false };
    live.add(pair);
    const forward = (from: Socket, to: Socket): void => {
      from.on('data', (chunk: Buffer) => {
        if (!pair.frozen) to.write(chunk);
      });
      from.on('end', () => {
        if (!pair.frozen) to.end();
      });
    };
    forward(a, b);
    forward(b, a);
    for (const s of [a, b]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        if (pair.frozen) return;
        live.delete(pair);
        a.destroy();
        b.destroy();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    get accepted() {
      return accepted;
    },
    freeze() {
      // Bytes are read and dropped (so neither kernel's buffers fill and back-pressure nothing):
      // to both ends the other has simply stopped talking.
      for (const p of live) p.frozen = true;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const p of live) {
          p.a.destroy();
          p.b.destroy();
        }
        server.close(() => r());
      }),
  };
}
