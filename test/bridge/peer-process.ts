// A bridge peer in its own process, so a test can freeze it (SIGSTOP): no FIN, no RST, only silence.
import { BridgeServer } from '../../services/edge/bridge/index.js';

const server = new BridgeServer({
  nodeId: 'node-b',
  secret: process.argv[2] ?? '',
  host: '127.0.0.1',
  port: 0,
  handler: (_open, stream) => {
    stream.on('error', () => undefined);
    stream.pipe(stream);
  },
});
await server.start();
process.send?.(server.port);
process.on('SIGTERM', () => process.exit(0));
