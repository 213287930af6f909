// Echo service in its own process for bench/echo and bench/memory: every connection gets its
// bytes back (half-close kept). Reports its port over IPC.
import { createServer } from 'node:net';

const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  s.on('error', () => s.destroy());
  s.pipe(s);
});
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.send?.(addr && typeof addr === 'object' ? addr.port : 0);
});
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0)); // the bench that forked us is gone
