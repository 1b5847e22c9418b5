// A Socket.IO client for forma's tests: connects to the `/events` namespace the way a browser
// would and prints what happens as JSON lines on stdout, one per line:
//   {"type":"connect","id":"...","transport":"websocket"}
//   {"type":"upgrade","transport":"websocket"}
//   {"type":"connect_error","message":"..."}
//   {"type":"event","event":"order:created","data":{...}}
//   {"type":"disconnect","reason":"..."}
// It runs until its stdin closes (the test ends it by dropping the process).
//
// Usage: node client.js <base-url> [--transport websocket|polling|polling,websocket]
//                                  [--cookie forma.sid=...]
//                                  [--bearer <token>]
"use strict";

const { io } = require("socket.io-client");

function parse(argv) {
  const options = { url: argv[0], transport: null, cookie: null, bearer: null };
  for (let i = 1; i < argv.length; i += 2) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case "--transport": options.transport = value; break;
      case "--cookie": options.cookie = value; break;
      case "--bearer": options.bearer = value; break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
  }
  if (!options.url) throw new Error("usage: client.js <base-url> [options]");
  return options;
}

const options = parse(process.argv.slice(2));
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const extraHeaders = {};
if (options.cookie) extraHeaders.Cookie = options.cookie;
if (options.bearer) extraHeaders.Authorization = `Bearer ${options.bearer}`;

const socket = io(`${options.url}/events`, {
  path: "/socket.io",
  // A browser's default is polling first, then the upgrade to websocket.
  transports: options.transport ? options.transport.split(",") : ["polling", "websocket"],
  // A test wants one outcome per client: a refused client reports it once and stops.
  reconnection: false,
  extraHeaders,
});

socket.on("connect", () => {
  print({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name });
});
socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (transport) => print({ type: "upgrade", transport: transport.name }));
});
socket.on("connect_error", (error) => {
  print({ type: "connect_error", message: error.message, description: String(error.description ?? "") });
});
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, data) => print({ type: "event", event, data }));

process.stdin.resume();
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
