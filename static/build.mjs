// Builds dist/v1/* (loader, CSS, lazily loaded engines, verification checks, chat, live
// transcript) and dist/manifest.json.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
// Build beside dist/ and swap at the end, so a server or test reading dist/ never
// sees it half-written.
const TMP = `node_modules/.build-${process.pid}`; // git-ignored scratch space
const OUT = `${TMP}/v1`;
rmSync(TMP, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome100', 'firefox100', 'safari15'],
  legalComments: 'none',
  logLevel: 'warning',
  define: { __VERSION__: JSON.stringify(pkg.version) },
};

const sri = (name) => `sha384-${createHash('sha384').update(readFileSync(`${OUT}/${name}`)).digest('base64')}`;
const LANGS = ['es', 'fr', 'de']; // src/i18n/<lang>.js -> i18n-<lang>.js (English is built in)
const LAZY = [
  'retell-widget.css',
  'engine-gateway.js',
  'engine-livekit.js',
  'verify.js',
  'chat.js',
  'chat.css',
  'transcript.js',
  'transcript.css',
  ...LANGS.map((l) => `i18n-${l}.js`),
];

// The proof-of-work worker's source, built first: verify.js carries it as a string and starts
// it from a Blob (a worker must be same-origin with the page), so the hash the loader pins
// verify.js with also covers the worker's code.
const worker = await build({ ...common, entryPoints: ['src/verify/pow-worker.js'], write: false });
const POW_WORKER = JSON.stringify(worker.outputFiles[0].text);

// Lazily loaded files first: the loader embeds their hashes, used when the page loaded
// the loader itself with SRI.
await Promise.all([
  build({ ...common, entryPoints: ['src/widget.css'], outfile: `${OUT}/retell-widget.css` }),
  build({ ...common, entryPoints: ['src/engines/gateway.js'], outfile: `${OUT}/engine-gateway.js` }),
  build({ ...common, entryPoints: ['src/engines/livekit.js'], outfile: `${OUT}/engine-livekit.js` }),
  build({ ...common, entryPoints: ['src/chat/index.js'], outfile: `${OUT}/chat.js` }),
  build({ ...common, entryPoints: ['src/chat/chat.css'], outfile: `${OUT}/chat.css` }),
  build({ ...common, entryPoints: ['src/transcript/index.js'], outfile: `${OUT}/transcript.js` }),
  build({ ...common, entryPoints: ['src/transcript/transcript.css'], outfile: `${OUT}/transcript.css` }),
  ...LANGS.map((l) => build({ ...common, entryPoints: [`src/i18n/${l}.js`], outfile: `${OUT}/i18n-${l}.js` })),
  build({
    ...common,
    entryPoints: ['src/verify/index.js'],
    outfile: `${OUT}/verify.js`,
    define: { ...common.define, __POW_WORKER__: POW_WORKER },
  }),
]);
const hashes = Object.fromEntries(LAZY.map((name) => [name, sri(name)]));
await build({
  ...common,
  entryPoints: ['src/loader.js'],
  outfile: `${OUT}/retell-widget.js`,
  define: { ...common.define, __SRI__: JSON.stringify(hashes) },
});

const files = {};
for (const name of ['retell-widget.js', ...LAZY]) {
  const data = readFileSync(`${OUT}/${name}`);
  files[`v1/${name}`] = { bytes: data.length, gzip: gzipSync(data, { level: 9 }).length, integrity: sri(name) };
}
writeFileSync(`${TMP}/manifest.json`, `${JSON.stringify({ version: pkg.version, files }, null, 2)}\n`);
const OLD = `node_modules/.old-dist-${process.pid}`;
if (existsSync('dist')) renameSync('dist', OLD);
renameSync(TMP, 'dist');
rmSync(OLD, { recursive: true, force: true });
for (const [name, f] of Object.entries(files)) console.log(`${name.padEnd(24)} ${String(f.bytes).padStart(7)} B  ${String(f.gzip).padStart(6)} B gzip`);
