// The Node reference of benches/socketio.sh (SPEC §10): the `socket.io` server with its Redis
// adapter, shaped like forma's: path /socket.io, namespace /events, a socket admitted by its session
// cookie joins its tenant's room, and events go to one tenant's room.
//
//   node server.mjs            (benches/socketio.sh starts it)
//
// Settings (environment): PORT (29301), REDIS_URL (redis://127.0.0.1:6379), KEY_PREFIX (the Redis
// adapter's channel prefix; unique per run). Listens on 127.0.0.1 only.
//
// Sessions: the cookie `forma.sid=<tenant>` names the tenant directly. A real server would look the
// session up in Redis; that costs at connect time only and changes neither the memory a connection
// holds nor a broadcast, which is what is measured. Anything else is refused like forma refuses it.
//
// The broadcast trigger (forma's is a real Shopify webhook): POST /emit?room=<tenant>&event=<name>
// with the JSON payload as the body; answered 204 once the emit is done.
import { createServer } from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';

const PORT = Number(process.env.PORT || 29301);
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const KEY_PREFIX = process.env.KEY_PREFIX || 'forma-bench-socket.io';

const pub = createClient({ url: REDIS_URL });
const sub = pub.duplicate();
for (const client of [pub, sub]) client.on('error', (e) => console.error('redis:', e.message));
await Promise.all([pub.connect(), sub.connect()]);

function tenantOf(cookieHeader) {
  for (const part of (cookieHeader || '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === 'forma.sid' && value.length > 0 && value.join('=') !== '') return value.join('=');
  }
  return null;
}

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on('data', (c) => chunks.push(c));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

const http = createServer(async (request, response) => {
  const url = new URL(request.url, 'http://127.0.0.1');
  if (request.method === 'GET' && url.pathname === '/health') {
    response.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    return;
  }
  if (request.method === 'POST' && url.pathname === '/emit') {
    try {
      const payload = JSON.parse(await readBody(request));
      const room = url.searchParams.get('room');
      const event = url.searchParams.get('event') || 'order:created';
      events.to(`tenant:${room}`).emit(event, payload);
      response.writeHead(204).end();
    } catch (e) {
      response.writeHead(400, { 'content-type': 'text/plain' }).end(String(e));
    }
    return;
  }
  // Engine.IO answers its own path before this handler; anything else is not here.
  if (!url.pathname.startsWith('/socket.io')) response.writeHead(404).end();
});

const io = new Server(http, {
  path: '/socket.io',
  serveClient: false,
  adapter: createAdapter(pub, sub, { key: KEY_PREFIX }),
});

const events = io.of('/events');
events.use((socket, next) => {
  const tenant = tenantOf(socket.handshake.headers.cookie);
  if (!tenant) return next(new Error('Unauthorized'));
  socket.data.tenant = tenant;
  next();
});
events.on('connection', (socket) => {
  socket.join(`tenant:${socket.data.tenant}`);
});

http.listen(PORT, '127.0.0.1', () => console.log(`socket.io reference listening on 127.0.0.1:${PORT}`));

async function stop() {
  io.close();
  await Promise.allSettled([pub.quit(), sub.quit()]);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
