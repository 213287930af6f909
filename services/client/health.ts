import type { AgentStatus } from './index.js';
import { serveHealth, type HealthServer } from '../../shared/platform/health.js';

/**
 * Optional health endpoint for supervisors (systemd, Kubernetes probes): GET /healthz answers 200
 * with the agent's status while a control session is up, 503 otherwise. Bind it to loopback unless
 * a remote probe needs it; it reveals ids and ports, never credentials.
 */
export function serveAgentHealth(host: string, port: number, status: () => AgentStatus): Promise<HealthServer> {
  return serveHealth(host, port, () => {
    const s = status();
    return { ok: s.connected, body: { ...s } };
  });
}
