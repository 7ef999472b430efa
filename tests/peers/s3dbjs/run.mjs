// Runs a list of operations with the real s3db.js against an S3 endpoint and writes what each
// returned (or the error it threw) as JSON to the output file. Used by tests/it/s3dbjs.rs.
//
//   node run.mjs INPUT.json OUTPUT.json
//
// INPUT: { connection, passphrase?, ops: [{ op, ... }] }
import { readFileSync, writeFileSync } from 'node:fs';
import { S3db } from 's3db.js';
import { verifyPassword } from './node_modules/s3db.js/dist/concerns/password-hashing.js';

const [, , input, output] = process.argv;
const job = JSON.parse(readFileSync(input, 'utf8'));
const db = new S3db({
  connectionString: job.connection,
  versioningEnabled: Boolean(job.versioning),
  security: job.passphrase ? { passphrase: job.passphrase } : undefined,
  logLevel: 'silent',
  clientOptions: { httpClientOptions: { useReckerHandler: false } },
});
await db.connect();

// What a caller sees of a record: s3db.js's own bookkeeping fields (`_etag`, `_v`…) dropped.
const visible = (r) => r && Object.fromEntries(Object.entries(r).filter(([k]) => !k.startsWith('_') && !k.startsWith('$')));

// JSON cannot carry a Buffer: `{"$buffer": "<base64>"}` in the input stands for one. Output
// Buffers are written as JSON.stringify writes them, `{"type":"Buffer","data":[…]}`.
const revive = (v) => {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    if (Object.keys(v).length === 1 && typeof v.$buffer === 'string') return Buffer.from(v.$buffer, 'base64');
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  }
  return v;
};

const results = [];
for (const o of job.ops) {
  try {
    switch (o.op) {
      case 'createResource': {
        await db.createResource(o.def);
        results.push({ ok: true });
        break;
      }
      case 'insert': {
        const r = await db.resources[o.resource].insert(revive(o.data));
        results.push({ ok: true, value: visible(r) });
        break;
      }
      case 'update': {
        const r = await db.resources[o.resource].update(o.id, o.data);
        results.push({ ok: true, value: visible(r) });
        break;
      }
      case 'get': {
        const r = await db.resources[o.resource].get(o.id);
        results.push({ ok: true, value: visible(r) });
        break;
      }
      case 'verifyPassword': {
        // What an s3db.js application does at login: the stored hash against the plain text.
        const r = await db.resources[o.resource].get(o.id);
        results.push({ ok: true, value: await verifyPassword(o.plain, r[o.field]) });
        break;
      }
      case 'delete': {
        await db.resources[o.resource].delete(o.id);
        results.push({ ok: true });
        break;
      }
      case 'list': {
        const rs = await db.resources[o.resource].list(o.options || {});
        results.push({ ok: true, value: rs.map(visible) });
        break;
      }
      case 'increment': {
        // Compare-and-swap as an s3db.js application does it: read, then updateConditional
        // with the ETag read, again on a conflict.
        const res = db.resources[o.resource];
        let conflicts = 0;
        for (let i = 0; i < o.times; i++) {
          for (;;) {
            const cur = await res.get(o.id);
            const out = await res.updateConditional(o.id, { [o.field]: cur[o.field] + 1 }, { ifMatch: cur._etag });
            if (out && out.success === false) { conflicts++; continue; }
            break;
          }
        }
        results.push({ ok: true, value: { conflicts } });
        break;
      }
      default:
        throw new Error(`unknown op ${o.op}`);
    }
  } catch (e) {
    results.push({ ok: false, error: String(e && e.message || e) });
  }
}
writeFileSync(output, JSON.stringify(results));
await db.disconnect();
process.exit(0);
