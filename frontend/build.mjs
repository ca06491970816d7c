// Builds frontend/dist: the pages, the bundled ES modules (TF.js included),
// the TF.js wasm binaries and uPlot's stylesheet. Nothing is loaded from a CDN.
import { build } from 'esbuild';
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

await build({
  entryPoints: ['volunteer', 'dashboard', 'worker'].map((name) => join(here, 'src', `${name}.js`)),
  outdir: dist,
  bundle: true,
  format: 'esm',
  minify: true,
  sourcemap: true,
  target: ['chrome110', 'firefox115', 'safari16'],
  logLevel: 'warning',
});

cpSync(join(here, 'public'), dist, { recursive: true });
const wasmDir = join(here, 'node_modules', '@tensorflow', 'tfjs-backend-wasm', 'dist');
for (const file of readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'))) cpSync(join(wasmDir, file), join(dist, file));
cpSync(join(here, 'node_modules', 'uplot', 'dist', 'uPlot.min.css'), join(dist, 'uplot.min.css'));
console.log(`built ${dist}`);
