/**
 * The one `host:port` parser (flags, the agent's --server, the health address). Accepted:
 * `host:port`, `1.2.3.4:port`, `[v6]:port`, and, when the caller has a default port, `host`,
 * `1.2.3.4` and `[v6]` alone. A bare IPv6 address must be bracketed (`::1:80` is ambiguous).
 * Ports are 1-65535 in plain decimal. Throws an Error naming the value otherwise.
 */
export function parseHostPort(address: string, defaultPort?: number): { host: string; port: number } {
  const m = /^(?:\[([^\][\s]+)\]|([^:[\]\s]+))(?::(\d{1,5}))?$/.exec(address.trim());
  const host = m?.[1] ?? m?.[2];
  const port = m?.[3] !== undefined ? Number(m[3]) : defaultPort;
  if (!m || !host || port === undefined || !(port >= 1 && port <= 65535)) {
    throw new Error(`invalid address "${address}": expected HOST:PORT${defaultPort !== undefined ? ` or HOST (port ${defaultPort})` : ''}`);
  }
  return { host, port };
}
