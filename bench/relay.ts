// Minimal Node TCP relay hop used as the baseline in bench/throughput: accept, dial, pipe both ways.
import { connect, createServer } from 'node:net';

const target = Number(process.argv[2]);
const server = createServer((a) => {
  a.setNoDelay(true);
  const b = connect({ port: target, host: '127.0.0.1' });
  b.setNoDelay(true);
  a.pipe(b);
  b.pipe(a);
  const kill = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
});
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.send?.(addr && typeof addr === 'object' ? addr.port : 0);
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0)); // the bench that forked us is gone
