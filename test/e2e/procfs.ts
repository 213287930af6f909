import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** What a process holds, read from /proc (Linux): the tests' view of an edge's resources. */

/**
 * A loopback address of its own for a test's control port (127.0.0.50–199): other tests' agents
 * that retry an old 127.0.0.1 port cannot land on it, so counting the edge's fds stays exact.
 */
export function privateLoopback(): string {
  return `127.0.0.${50 + Math.floor(Math.random() * 150)}`;
}

/** Open file descriptors of `pid`. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size of `pid`, in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

export interface TcpSocket {
  localPort: number;
  remotePort: number;
  /** Kernel state, e.g. 01 ESTABLISHED, 0A LISTEN. */
  state: string;
  /** Timer field: 0 none, 1 retransmit, 2 keepalive (or another timer), 3 TIME_WAIT, 4 zero-window probe. */
  timer: number;
  inode: string;
}

/** The TCP sockets (IPv4 and IPv6) among `pid`'s file descriptors. */
export function tcpSockets(pid: number): TcpSocket[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  const out: TcpSocket[] = [];
  for (const table of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const inode = f[9]!;
      if (!inodes.has(inode)) continue;
      out.push({
        localPort: parseInt(f[1]!.split(':')[1]!, 16),
        remotePort: parseInt(f[2]!.split(':')[1]!, 16),
        state: f[3]!,
        timer: parseInt(f[5]!.split(':')[0]!, 16),
        inode,
      });
    }
  }
  return out;
}

/** `pid`'s established TCP connections whose local port is one of `ports` (accepted connections). */
export function acceptedOn(pid: number, ports: readonly number[]): TcpSocket[] {
  return tcpSockets(pid).filter((s) => s.state === '01' && ports.includes(s.localPort));
}

/** What `pid`'s fds are, for a failure message: sockets by TCP state and ports, the rest by target. */
export function describeFds(pid: number): string {
  const tcp = new Map(tcpSockets(pid).map((s) => [s.inode, s]));
  const counts = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let what: string;
    try {
      what = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^socket:\[(\d+)\]$/.exec(what);
    if (m) {
      const s = tcp.get(m[1]!);
      what = s ? `tcp ${s.localPort}->${s.remotePort} st ${s.state}` : 'socket (not tcp)';
    } else if (what.startsWith('/')) {
      what = what.replace(/\/[^/]*$/, '/…');
    }
    counts.set(what, (counts.get(what) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${n}× ${k}`).join('; ');
}
