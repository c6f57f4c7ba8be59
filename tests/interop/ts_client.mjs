// proc-mcp driven by the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in
// package.json + package-lock.json), on Node 20.
//
// Run by tests/interop.rs (copied next to its node_modules): node ts_client.mjs SERVER_BIN {smoke|devserver}
//
// - smoke:     the issue-2 tools (start/status/logs/stop/list/remove) by id and by name;
// - devserver: a real dev server started with `wait_for`, fetched from, `wait`ed on, read
//              incrementally with `logs` + `since`, stopped.
//
// Every result goes through the SDK's own zod result schemas, and every structuredContent is
// checked against its tool's outputSchema with the SDK's Ajv validator (over all tools/list
// pages: the SDK itself only keeps the last page's validators). Prints what it does; the last
// line is `PASS ts <scenario>`. Any failure throws: non-zero exit with the stack.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';

const [server, scenario] = process.argv.slice(2);
const EVENT_TIMEOUT_MS = 30000;
const CALL_OPTIONS = { timeout: 60000 };

function check(cond, what, value) {
  if (!cond) {
    const shown = value === undefined ? '' : `: ${JSON.stringify(value).slice(0, 2000)}`;
    throw new Error(`${what}${shown}`);
  }
}

const texts = (logs) => logs.lines.map((line) => line.text);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function httpGet(port, path) {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 15000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.on('error', reject);
  });
}

class Conn {
  constructor(client) {
    this.client = client;
    this.validators = new Map();
  }

  async listTools() {
    const tools = [];
    let cursor;
    for (let page = 0; page < 100; page++) {
      const result = await this.client.listTools(cursor === undefined ? undefined : { cursor }, CALL_OPTIONS);
      tools.push(...result.tools);
      cursor = result.nextCursor;
      if (cursor === undefined) {
        const ajv = new AjvJsonSchemaValidator();
        for (const tool of tools) {
          check(tool.outputSchema !== undefined, `${tool.name} has an outputSchema`, tool);
          check(tool.inputSchema.additionalProperties === false, `${tool.name}: additionalProperties false`, tool);
          this.validators.set(tool.name, ajv.getValidator(tool.outputSchema));
        }
        return tools;
      }
    }
    throw new Error('tools/list never ended (100 pages)');
  }

  async call(name, args, options = {}) {
    const result = await this.client.callTool({ name, arguments: args }, undefined, { ...CALL_OPTIONS, ...options });
    const text = result.content.filter((c) => c.type === 'text').map((c) => c.text).join(' ');
    check(result.isError !== true, `${name} ${JSON.stringify(args)} failed: ${text}`);
    check(text.trim() !== '', `${name}: no text block`, result);
    const validate = this.validators.get(name);
    check(validate !== undefined, `${name} was not listed`);
    const verdict = validate(result.structuredContent);
    check(verdict.valid, `${name}: structuredContent does not match outputSchema (${verdict.errorMessage})`, result.structuredContent);
    return result.structuredContent;
  }
}

async function smoke(conn) {
  const names = new Set((await conn.listTools()).map((t) => t.name));
  for (const name of ['start', 'status', 'logs', 'stop', 'list', 'remove']) check(names.has(name), `tools/list has ${name}`, [...names]);

  const task = await conn.call('start', { command: "printf 'one\\ntwo\\n'; exec sleep 60", name: 'ts-smoke' });
  check(/^[A-Za-z0-9_-]{6}$/.test(task.id), 'id is a 6-char nanoid', task);
  // The issue-2 toolset has no `wait`: poll `logs` (bounded) until both lines are there.
  const deadline = Date.now() + EVENT_TIMEOUT_MS;
  let logs;
  while ((logs = await conn.call('logs', { id: task.id })).lines.length < 2) {
    check(Date.now() < deadline, 'the two lines never showed up', logs);
    await sleep(50);
  }
  check(JSON.stringify(texts(logs)) === '["one","two"]' && logs.next_cursor === 2, 'logs', logs);
  const status = await conn.call('status', { id: 'ts-smoke' });
  check(status.id === task.id && status.state === 'running', 'status by name', status);
  check((await conn.call('list', {})).tasks.some((t) => t.id === task.id), 'list has the task');
  const stopped = await conn.call('stop', { id: task.id });
  check(stopped.state === 'exited' && stopped.stopped === true, 'stop', stopped);
  const removed = await conn.call('remove', { id: task.id });
  check(removed.id === task.id && removed.removed === true, 'remove', removed);
  check(!(await conn.call('list', {})).tasks.some((t) => t.id === task.id), 'list after remove');
}

async function devserver(conn) {
  await conn.listTools();
  const dir = mkdtempSync(join(tmpdir(), 'proc-mcp-ts-'));
  try {
    writeFileSync(join(dir, 'hello.txt'), 'hello from the ts client\n');
    writeFileSync(join(dir, 'second.txt'), 'second file\n');
    const task = await conn.call('start', {
      command: 'python3 -m http.server 0 --bind 127.0.0.1',
      cwd: dir,
      wait_for: 'Serving HTTP on 127\\.0\\.0\\.1 port (\\d+)',
      wait_timeout_ms: 30000,
    });
    const { id, ready } = task;
    check(task.state === 'running', 'start state', task);
    check(ready && ready.matched === true && ready.reason === 'matched', 'ready', task);
    const port = Number(/port (\d+)/.exec(ready.line)[1]);
    console.log(`dev server ${id} ready on port ${port}`);

    check((await httpGet(port, '/hello.txt')) === 'hello from the ts client\n', 'fetched body');
    let waited = await conn.call('wait', { id, pattern: 'GET /hello\\.txt', timeout_ms: 30000 });
    check(waited.reason === 'matched' && waited.line.text.includes('GET /hello.txt'), 'wait', waited);

    const first = await conn.call('logs', { id });
    check(texts(first).some((t) => t.includes('Serving HTTP on 127.0.0.1 port')), 'first logs: ready line', first);
    check(texts(first).some((t) => t.includes('GET /hello.txt')), 'first logs: request line', first);
    const cursor = first.next_cursor;

    await httpGet(port, '/second.txt');
    waited = await conn.call('wait', { id, pattern: 'GET /second\\.txt', since: cursor, timeout_ms: 30000 });
    check(waited.reason === 'matched' && waited.line.n >= cursor, 'second wait', waited);
    const fresh = await conn.call('logs', { id, since: cursor });
    check(fresh.lines.length > 0 && fresh.lines.every((l) => l.n >= cursor), 'only new lines', fresh);
    check(texts(fresh).some((t) => t.includes('GET /second.txt')), 'new request line', fresh);
    check(!texts(fresh).some((t) => t.includes('Serving HTTP') || t.includes('GET /hello.txt')), 'no old lines', fresh);
    check(fresh.next_cursor > cursor, 'the cursor moves on', fresh);
    const rest = await conn.call('logs', { id, since: fresh.next_cursor });
    check(rest.lines.length === 0 && rest.next_cursor === fresh.next_cursor, 'nothing newer', rest);

    // A wait that runs out, reporting progress to the SDK's onprogress meanwhile.
    const progress = [];
    const onprogress = (p) => progress.push(p.progress);
    waited = await conn.call('wait', { id, pattern: 'never printed', since: rest.next_cursor, timeout_ms: 2500 }, { onprogress });
    check(waited.reason === 'timeout' && !('line' in waited), 'wait timeout', waited);
    check(progress.length >= 1, 'onprogress was called', progress);
    check(progress.every((p, i) => i === 0 || progress[i - 1] < p), 'progress increases', progress);

    const stopped = await conn.call('stop', { id });
    check(stopped.state === 'exited' && stopped.stopped === true, 'stop', stopped);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const transport = new StdioClientTransport({ command: server, args: [], stderr: 'inherit' });
const client = new Client({ name: 'proc-mcp-interop-ts', version: '0.0.0' });
client.fallbackNotificationHandler = async (n) => console.log(`notification ${n.method}`);
let negotiated;
transport.setProtocolVersion = (version) => (negotiated = version); // the SDK reports it here
await client.connect(transport);
console.log(`connected: protocol=${negotiated} server=${JSON.stringify(client.getServerVersion())}`);
check(negotiated === '2025-11-25', 'negotiated version', negotiated);
const conn = new Conn(client);
try {
  if (scenario === 'smoke') await smoke(conn);
  else if (scenario === 'devserver') await devserver(conn);
  else throw new Error(`unknown scenario ${scenario}`);
} catch (error) {
  console.log(`FAIL ts ${scenario}: ${error.message}`);
  console.error(error);
  await client.close();
  process.exit(1);
}
await client.close();
console.log(`PASS ts ${scenario}`);
