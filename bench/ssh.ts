// `ssh -R` baseline for bench/throughput: a private sshd on a loopback port (own host key, own
// authorized key, no PAM), and an ssh client forwarding a remote port to the sink. Only used when
// sshd and ssh are installed; everything lives in a temp dir that is removed afterwards.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { canConnect, eventually, freePort, tempDir } from '../test/e2e/harness.js';

export interface SshReverse {
  /** Connecting here goes ssh client → sshd (encrypted) → sink. */
  port: number;
  stop(): Promise<void>;
}

export const SSHD = '/usr/sbin/sshd';

export async function startSshReverse(targetPort: number): Promise<SshReverse> {
  const dir = await tempDir('tnx-bench-ssh');
  const procs: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const p of procs) p.kill('SIGTERM');
    await dir.remove();
  };
  try {
    const key = join(dir.path, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir.path, 'host_ed25519')]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    writeFileSync(join(dir.path, 'authorized_keys'), readFileSync(`${key}.pub`), { mode: 0o600 });
    const sshdPort = await freePort();
    const config = [
      `Port ${sshdPort}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir.path, 'host_ed25519')}`,
      `AuthorizedKeysFile ${join(dir.path, 'authorized_keys')}`, `PidFile ${join(dir.path, 'sshd.pid')}`,
      'StrictModes no', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no',
      'PermitRootLogin prohibit-password', 'AllowTcpForwarding yes', 'GatewayPorts no',
    ].join('\n');
    writeFileSync(join(dir.path, 'sshd_config'), config + '\n');
    mkdirSync('/run/sshd', { recursive: true }); // privilege separation dir sshd insists on
    procs.push(spawn(SSHD, ['-D', '-e', '-f', join(dir.path, 'sshd_config')], { stdio: 'ignore' }));
    await eventually('sshd listening', () => canConnect(sshdPort), 10_000);
    const port = await freePort();
    procs.push(
      spawn('ssh', [
        '-N', '-i', key, '-p', String(sshdPort), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ExitOnForwardFailure=yes', '-o', 'LogLevel=ERROR',
        '-R', `127.0.0.1:${port}:127.0.0.1:${targetPort}`, `${userInfo().username}@127.0.0.1`,
      ], { stdio: 'ignore' }),
    );
    await eventually('ssh -R forwarding', () => canConnect(port), 10_000);
    return { port, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
