// A minimal grpc-js bidi relay of the bridge's shape, for bench/cluster's baseline: mode `in`
// accepts TCP and carries each connection over one bidi call (the bridge's proto, Data frames of
// at most 128 KiB, grpc-js defaults) to mode `out`, which dials the target and pipes the call to it.
// No auth, no credit frames, no pool: the least such a hop can cost. Prints its port over IPC.
// Usage (forked by bench/cluster): grpc-relay.js in <out-port> | out <target-port>
import { connect, createServer, type Socket } from 'node:net';
import { Client, Server, ServerCredentials, credentials, type ClientDuplexStream, type ServerDuplexStream } from '@grpc/grpc-js';
import { bridgeService, MAX_FRAME_PAYLOAD, type BridgeFrame, type OutFrame } from '../services/edge/bridge/proto.js';

type Call = ClientDuplexStream<OutFrame, BridgeFrame> | ServerDuplexStream<BridgeFrame, OutFrame>;

/** Socket ⇄ call, with backpressure both ways and FIN carried as a Data frame with fin set. */
function splice(socket: Socket, call: Call): void {
  socket.setNoDelay(true);
  socket.on('data', (chunk: Buffer) => {
    let ok = true;
    for (let off = 0; off < chunk.length; off += MAX_FRAME_PAYLOAD) ok = call.write({ data: { payload: chunk.subarray(off, off + MAX_FRAME_PAYLOAD) } });
    if (!ok) {
      socket.pause();
      call.once('drain', () => socket.resume());
    }
  });
  socket.on('end', () => {
    call.write({ data: { fin: true } });
    call.end();
  });
  call.on('data', (f: BridgeFrame) => {
    if (f.kind !== 'data') return;
    if (f.data.payload.length > 0 && !socket.write(f.data.payload)) {
      call.pause();
      socket.once('drain', () => call.resume());
    }
    if (f.data.fin) socket.end();
  });
  const kill = (): void => {
    socket.destroy();
    call.destroy();
  };
  socket.on('error', kill);
  call.on('error', () => socket.destroy());
}

async function main(): Promise<void> {
  const [mode, port] = [process.argv[2], Number(process.argv[3])];
  const def = bridgeService()['Tunnel']!;
  let bound: number;
  if (mode === 'out') {
    const server = new Server();
    server.addService(bridgeService(), {
      Tunnel: (call: ServerDuplexStream<BridgeFrame, OutFrame>) => splice(connect({ port, host: '127.0.0.1', allowHalfOpen: true }), call),
    });
    bound = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  } else {
    const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
    const server = createServer({ allowHalfOpen: true }, (socket) =>
      splice(socket, client.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize) as ClientDuplexStream<OutFrame, BridgeFrame>),
    );
    bound = await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  }
  process.send?.(bound);
  process.on('SIGTERM', () => process.exit(0));
}

await main();
