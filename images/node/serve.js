// serve: the HTTP conventions of the sample functions (images/common/serve.py) for a Node.js
// function, on node:http.
//
// A function requires this module first (the initialisation clock starts), initialises, then calls
// serve(name, handle, info). From then on:
// - it listens on 0.0.0.0:$PORT (default 8080) and prints "<name> listening on <port>";
// - every request is counted; the count is in the X-Served header of every answer, and each request
//   prints "request N METHOD PATH" once answered;
// - a request the handler leaves alone (it returns null: GET / for instance, the readiness probe)
//   gets the JSON status {"ok", "served", "pid", "initialised_at", "init_seconds", "function",
//   "restored", "replica", ...}; a restored replica continues the count and keeps pid and
//   initialised_at of the process it was baked from;
// - SIGTERM (from the require on) exits 0;
// - a handler throwing BadRequest answers 400, any other exception 500, both as JSON;
// - after a restore the prebake runtime sends the signal named by PREBAKE_RESTORE_SIGNAL (the image
//   sets SIGUSR2): the replica then takes a new replica id and reseeds the function's random numbers
//   (random()), both from the kernel (/dev/urandom), and runs the hooks registered with
//   afterRestore(); the status says "restored": true and "restored_at" (Date.now(), seconds) from
//   then on. Not from node:crypto: crypto.randomUUID() hands out ids from a cache it filled before
//   the checkpoint, and OpenSSL's generator state is in the checkpoint too, so every replica of one
//   checkpoint would draw the same "random" bytes from them.
// Every answer closes its connection (Connection: close), as serve.py's HTTP/1.0 does: no idle
// connection is left open when a checkpoint is taken.
'use strict';

const started = process.hrtime.bigint();
const fs = require('node:fs');
const http = require('node:http');

// As pid 1 a process ignores SIGTERM unless it handles it: stop cleanly (docker stop, kill).
process.on('SIGTERM', () => process.exit(0));

const MAX_BODY = 16 << 20;

class BadRequest extends Error {}

/** `n` bytes from the kernel's generator. */
function urandom(n) {
  const bytes = Buffer.alloc(n);
  const fd = fs.openSync('/dev/urandom', 'r');
  try {
    for (let got = 0; got < n; ) got += fs.readSync(fd, bytes, got, n - got, null);
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}

/** A version 4 UUID from the kernel's generator. */
function uuid4() {
  const b = urandom(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// What differs per replica: renewed after a restore.
const replica = { replica: uuid4(), restored: false };
const hooks = [];

/** xorshift128+ seeded from the kernel: the function's random numbers, reseeded in a restored replica. */
const state = new BigUint64Array(2);
function reseed() {
  const seed = urandom(16);
  state[0] = seed.readBigUInt64LE(0);
  state[1] = seed.readBigUInt64LE(8);
  if (state[0] === 0n && state[1] === 0n) state[0] = 1n;
}
reseed();
function random() {
  let s1 = state[0];
  const s0 = state[1];
  state[0] = s0;
  s1 ^= (s1 << 23n) & 0xffffffffffffffffn;
  state[1] = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
  return Number((state[1] + s0) & 0x1fffffffffffffn) / 2 ** 53;
}

function afterRestore(hook) {
  hooks.push(hook);
  return hook;
}

const restoreSignal = process.env.PREBAKE_RESTORE_SIGNAL || '';
if (restoreSignal) {
  process.on(restoreSignal.startsWith('SIG') ? restoreSignal : `SIG${restoreSignal}`, () => {
    reseed();
    replica.replica = uuid4();
    replica.restored = true;
    replica.restored_at = Date.now() / 1000;
    for (const hook of hooks) hook();
  });
}

function json(value, status = 200) {
  return { status, contentType: 'application/json', body: Buffer.from(JSON.stringify(value)) };
}

/** Answers requests with handle({method, path, query, headers, body, served}) -> response | null. */
function serve(name, handle, info = {}) {
  const status = {
    pid: process.pid,
    initialised_at: Date.now() / 1000,
    init_seconds: Math.round(Number(process.hrtime.bigint() - started) / 1e3) / 1e6,
    function: name,
    ...info,
  };
  let served = 0;
  const server = http.createServer((req, res) => {
    const n = ++served;
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      let response;
      try {
        const declared = Number(req.headers['content-length'] ?? 0);
        if (!(declared >= 0 && declared <= MAX_BODY) || size > MAX_BODY) throw new BadRequest(`a body of ${Math.max(declared, size)} bytes is not accepted (at most ${MAX_BODY})`);
        const [path, query = ''] = req.url.split('?', 2);
        response = handle({ method: req.method, path, query, headers: req.headers, body: Buffer.concat(chunks), served: n });
        if (response == null) response = json({ ok: true, served: n, ...status, ...replica });
      } catch (e) {
        if (e instanceof BadRequest) response = json({ ok: false, served: n, error: e.message }, 400);
        else {
          console.error(e);
          response = json({ ok: false, served: n, error: `${e.name}: ${e.message}` }, 500);
        }
      }
      res.writeHead(response.status, {
        'Content-Type': response.contentType,
        'Content-Length': response.body.length,
        'X-Served': String(n),
        Connection: 'close',
      });
      res.end(response.body, () => process.stdout.write(`request ${n} ${req.method} ${req.url}\n`));
    });
  });
  const port = Number(process.env.PORT || 8080);
  server.listen(port, '0.0.0.0', () => process.stdout.write(`${name} listening on ${port}\n`));
}

module.exports = { BadRequest, afterRestore, json, random, serve };
