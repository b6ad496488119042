// Measures how fast the client is `connected` again once the network comes
// back, when no backoff wait is pending: the proxy goes down (connections
// cut, new ones refused) for 1.5 s, comes back, and the app calls
// `reconnectNow()` (what the `online` event and Electron's powerMonitor
// `resume` do). Prints the figures; asserts nothing.
//   node bench/reconnect.mjs [rounds]   (needs target/release/callbridge)

import { CallbridgeClient } from '../dist/index.js';
import { Daemon, Proxy, sleep, until } from '../test/integration/harness.js';

const rounds = Number(process.argv[2] ?? 20);
const d = await Daemon.start();
const proxy = await Proxy.start(d.port);
const client = new CallbridgeClient({ url: proxy.url(), getToken: async () => d.token(), WebSocket: d.WebSocket });
let connectedAt = 0;
client.on('state', ({ to }) => {
  if (to === 'connected') connectedAt = performance.now();
});
client.start();
await until(() => client.state === 'connected', 15_000, 'connected');
const ms = [];
for (let i = 0; i < rounds; i++) {
  proxy.down();
  await until(() => client.state !== 'connected', 10_000, 'the drop to be seen');
  await sleep(1500);
  proxy.up();
  const t0 = performance.now();
  client.reconnectNow();
  await until(() => client.state === 'connected', 10_000, 'connected again');
  ms.push(connectedAt - t0);
}
client.stop();
await proxy.close();
await d.stop();
ms.sort((a, b) => a - b);
const at = (p) => ms[Math.min(ms.length - 1, Math.round((ms.length - 1) * p))].toFixed(1);
console.log(`reconnect after the network came back (reconnectNow, ${rounds} rounds): p50 ${at(0.5)} ms  p90 ${at(0.9)} ms  max ${at(1)} ms`);
