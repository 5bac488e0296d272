// Builds the sample apps as a site would, against the package as npm installs it:
//   node samples/build.mjs <root>
// where <root>/node_modules/retell-widget is the unpacked `npm pack` of static/. The sources
// are copied under <root> first, so `retell-widget/react` resolves there (never to static/
// itself); react, react-dom and vue come from static/node_modules. Writes
// <root>/out/{react19,react18,vue}/main.js and their chunks.
import { build } from 'esbuild';
import { cpSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = process.argv[2];
if (!root) throw new Error('usage: node samples/build.mjs <root>');
const here = fileURLToPath(new URL('.', import.meta.url));
const modules = fileURLToPath(new URL('../node_modules', import.meta.url));
for (const app of ['react', 'vue']) cpSync(`${here}${app}`, `${root}/src/${app}`, { recursive: true });

const common = {
  bundle: true,
  format: 'esm',
  splitting: true, // the widget's parts stay chunks of their own, loaded on demand
  target: ['chrome100'],
  nodePaths: [modules],
  logLevel: 'warning',
  absWorkingDir: root,
};
// Development builds: StrictMode mounts twice only there.
const env = { 'process.env.NODE_ENV': '"development"' };
const react = (version, alias) =>
  build({
    ...common,
    entryPoints: { main: 'src/react/main.jsx' },
    outdir: `out/${version}`,
    jsx: 'automatic',
    define: env,
    // Every import of react, also react-dom's own, goes to the same copy.
    alias,
  });

await Promise.all([
  react('react19', {}),
  react('react18', { react: `${modules}/react18`, 'react-dom': `${modules}/react-dom18` }),
  build({
    ...common,
    entryPoints: { main: 'src/vue/main.js' },
    outdir: 'out/vue',
    // The full build: the sample's components use template strings.
    alias: { vue: `${modules}/vue/dist/vue.esm-bundler.js` },
    define: { ...env, __VUE_OPTIONS_API__: 'true', __VUE_PROD_DEVTOOLS__: 'false', __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false' },
  }),
]);
