import { createServer, type Server } from 'node:http';
import { listen } from '../net/listen.js';

export interface HealthReport {
  ok: boolean;
  /** Shown as the JSON body: ids, counts and states, never credentials. */
  body: Record<string, unknown>;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * A health endpoint for supervisors (systemd, Kubernetes probes, load balancers): GET /healthz and
 * /readyz answer 200 with the report while it is ok, 503 otherwise; anything else is a 404. Bind it
 * to loopback unless a remote probe needs it.
 */
export async function serveHealth(host: string, port: number, report: () => HealthReport): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/healthz' && req.url !== '/readyz')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    let r: HealthReport;
    try {
      r = report();
    } catch (err) {
      r = { ok: false, body: { error: err instanceof Error ? err.message : String(err) } };
    }
    res.writeHead(r.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(r.body));
  });
  // A probe that opens a connection and says nothing must not hold it forever.
  server.requestTimeout = 5_000;
  server.headersTimeout = 5_000;
  const addr = await listen(server, { host, port });
  server.on('error', () => undefined); // a bound listener's later errors are per connection
  return {
    port: addr.port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
