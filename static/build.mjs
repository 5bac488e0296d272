// Builds dist/v1/* (the CDN files: loader, CSS, lazily loaded parts), dist/esm/* (the npm
// package's ES modules) and dist/manifest.json.
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

const sri = (name, alg = 'sha384') => `${alg}-${createHash(alg).update(readFileSync(`${OUT}/${name}`)).digest('base64')}`;
// The parts the loader fetches: <name>.js from src/<module>, handing its default export to
// RetellWidget._define(name) (the npm build imports the same modules: src/index.js).
const PARTS = {
  'engine-gateway': 'engines/gateway.js',
  'engine-livekit': 'engines/livekit.js',
  verify: 'verify/index.js',
  chat: 'chat/index.js',
  transcript: 'transcript/index.js',
  consent: 'consent/index.js',
  feedback: 'feedback/index.js',
  'i18n-es': 'i18n/es.js', // English is built in
  'i18n-fr': 'i18n/fr.js',
  'i18n-de': 'i18n/de.js',
};
const SHEETS = {
  'retell-widget': 'widget.css',
  chat: 'chat/chat.css',
  transcript: 'transcript/transcript.css',
  consent: 'consent/consent.css',
  feedback: 'feedback/feedback.css',
};
const LAZY = [...Object.keys(SHEETS).map((n) => `${n}.css`), ...Object.keys(PARTS).map((n) => `${n}.js`)];

// The proof-of-work worker's source, built first: verify.js carries it as a string and starts
// it from a Blob (a worker must be same-origin with the page), so the hash the loader pins
// verify.js with also covers the worker's code.
const worker = await build({ ...common, entryPoints: ['src/verify/pow-worker.js'], write: false });
common.define.__POW_WORKER__ = JSON.stringify(worker.outputFiles[0].text);

// Lazily loaded files first: the loader embeds their hashes, used when the page loaded
// the loader itself with SRI.
await Promise.all([
  ...Object.entries(SHEETS).map(([name, src]) => build({ ...common, entryPoints: [`src/${src}`], outfile: `${OUT}/${name}.css` })),
  ...Object.entries(PARTS).map(([name, src]) =>
    build({
      ...common,
      stdin: {
        contents: `import part from './src/${src}';\nRetellWidget._define(${JSON.stringify(name)}, part);\n`,
        resolveDir: '.',
        sourcefile: `${name}.entry.js`,
      },
      outfile: `${OUT}/${name}.js`,
    }),
  ),
]);
// SHA-256 inside the loader (as strong a pin, and 20 bytes shorter each); the manifest gives
// SHA-384 for the page's own tags.
const hashes = Object.fromEntries(LAZY.map((name) => [name, sri(name, 'sha256')]));
await build({
  ...common,
  entryPoints: ['src/loader.js'],
  outfile: `${OUT}/retell-widget.js`,
  define: { ...common.define, __SRI__: JSON.stringify(hashes) },
});

// The npm package's ES modules (package.json "exports"): the widget, whose parts become chunks
// the page's bundler can split again, and the framework wrappers, sharing one copy of it.
// css:<name> imports are the stylesheets just built, as strings.
const cssText = {
  name: 'css-text',
  setup(b) {
    b.onResolve({ filter: /^css:/ }, (a) => ({ path: a.path.slice(4), namespace: 'css' }));
    b.onLoad({ filter: /.*/, namespace: 'css' }, (a) => ({ contents: readFileSync(`${OUT}/${a.path}.css`, 'utf8'), loader: 'text' }));
  },
};
await build({
  ...common,
  format: 'esm',
  splitting: true,
  entryPoints: { index: 'src/index.js', react: 'src/react/index.js', vue: 'src/vue/index.js' },
  outdir: `${TMP}/esm`,
  chunkNames: 'chunks/[name]-[hash]',
  external: ['react', 'react-dom', 'vue'],
  plugins: [cssText],
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
