import { createServer, type Server } from 'node:http';
import type { AgentStatus } from './index.js';
import { listen } from '../../shared/net/listen.js';

/**
 * Optional health endpoint for supervisors (systemd, Kubernetes probes): GET /healthz answers 200
 * with the agent's status while a control session is up, 503 otherwise. Bind it to loopback unless
 * a remote probe needs it; it reveals ids and ports, never credentials.
 */
export async function serveAgentHealth(host: string, port: number, status: () => AgentStatus): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/healthz' && req.url !== '/readyz')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    const s = status();
    res.writeHead(s.connected ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(s));
  });
  const addr = await listen(server, { host, port });
  server.on('error', () => undefined); // a bound listener's later errors are per connection
  return {
    port: addr.port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
