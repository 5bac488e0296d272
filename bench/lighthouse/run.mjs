// Lighthouse on each page of a spec, `runs` times, interleaved (a noisy neighbour hits every
// page alike), one fresh headless Chromium per run. Writes the numbers bench/pagecost.py
// reports to spec.out:  node run.mjs spec.json
import { readFileSync, writeFileSync } from 'node:fs';
import * as chromeLauncher from 'chrome-launcher';
import lighthouse from 'lighthouse';

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// chrome-launcher starts Chromium in its own process group and stops it on SIGINT only.
process.on('SIGTERM', () => {
  chromeLauncher.killAll();
  process.exit(143);
});

const config = {
  extends: 'lighthouse:default',
  settings: { onlyCategories: ['performance'] },
  // Every script's main-thread time, not only the ones over 50 ms.
  audits: [{ path: 'bootup-time', options: { thresholdInMs: 0 } }],
};

const sum = (items, key) => items.reduce((n, i) => n + (i[key] || 0), 0);

// The widget's own JavaScript on the page's main thread, observed (not scaled): compile,
// top-level run and callbacks (FunctionCall) of its scripts, outermost events only.
// bootup-time instead charges whole tasks, e.g. the page's HTML parsing that ran our script.
function ownScriptMs(trace, prefix) {
  const events = trace.traceEvents;
  const ours = (e) => (e.args?.data?.url || e.args?.data?.fileName || '').startsWith(prefix);
  const mains = new Set(
    events.filter((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`),
  );
  const names = new Set(['EvaluateScript', 'v8.compile', 'v8.compileModule', 'FunctionCall', 'v8.evaluateModule']);
  const spans = events
    .filter((e) => e.ph === 'X' && names.has(e.name) && mains.has(`${e.pid}:${e.tid}`) && ours(e))
    .map((e) => [e.ts, e.ts + (e.dur || 0)])
    .sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = -Infinity;
  for (const [from, to] of spans) {
    if (from >= end) {
      total += to - from;
      end = to;
    } else if (to > end) {
      total += to - end;
      end = to;
    }
  }
  return total / 1000;
}

function numbers(lhr, trace) {
  const a = lhr.audits;
  const observed = a.metrics.details?.items?.[0] || {};
  const s = lhr.configSettings;
  // bootup-time scales observed time by the simulated CPU slowdown; keep both.
  const multiplier = s.throttlingMethod === 'simulate' ? s.throttling.cpuSlowdownMultiplier : 1;
  const ours = (url) => url.startsWith(spec.widget);
  const boot = (a['bootup-time'].details?.items || []).filter((i) => ours(i.url));
  const loader = boot.filter((i) => i.url.endsWith('/retell-widget.js'));
  const requests = a['network-requests'].details?.items || [];
  const widgetRequests = requests.filter((i) => ours(i.url));
  return {
    score: lhr.categories.performance.score,
    tbt_ms: a['total-blocking-time'].numericValue,
    cls: a['cumulative-layout-shift'].numericValue,
    fcp_ms: a['first-contentful-paint'].numericValue,
    lcp_ms: a['largest-contentful-paint'].numericValue,
    si_ms: a['speed-index'].numericValue,
    bytes: a['total-byte-weight'].numericValue,
    requests: requests.length,
    widget_bytes: sum(widgetRequests, 'transferSize'),
    widget_requests: widgetRequests.map((i) => i.url.slice(spec.widget.length)),
    main_thread_ms: a['mainthread-work-breakdown'].numericValue,
    cpu_multiplier: multiplier,
    widget_main_thread_ms: sum(boot, 'total'),
    loader_main_thread_ms: sum(loader, 'total'),
    widget_js_observed_ms: ownScriptMs(trace, spec.widget),
    loader_js_observed_ms: ownScriptMs(trace, `${spec.widget}retell-widget.js`),
    observed_fcp_ms: observed.observedFirstContentfulPaint,
    observed_lcp_ms: observed.observedLargestContentfulPaint,
    // Audits this Lighthouse could not compute from this Chromium's trace (none of the above).
    errored_audits: Object.values(a).filter((x) => x.scoreDisplayMode === 'error').map((x) => x.id),
    widget_scripts: boot.map((i) => ({
      url: i.url.slice(spec.widget.length),
      total: i.total,
      scripting: i.scripting,
      parse_compile: i.scriptParseCompile,
    })),
    warnings: lhr.runWarnings,
    runtime_error: lhr.runtimeError?.code || null,
  };
}

const results = { lighthouse: null, runs: [] };
for (let run = 0; run < spec.runs; run++) {
  for (const [name, url] of Object.entries(spec.pages)) {
    const chrome = await chromeLauncher.launch({ chromePath: spec.chromePath, chromeFlags: spec.flags });
    console.log(JSON.stringify({ chrome_pid: chrome.pid, page: name, run }));
    try {
      const result = await lighthouse(url, { port: chrome.port, logLevel: 'error', output: 'json' }, config);
      results.lighthouse = result.lhr.lighthouseVersion;
      results.userAgent = result.lhr.environment.hostUserAgent;
      results.settings = {
        formFactor: result.lhr.configSettings.formFactor,
        throttlingMethod: result.lhr.configSettings.throttlingMethod,
        throttling: result.lhr.configSettings.throttling,
      };
      results.runs.push({ page: name, run, ...numbers(result.lhr, result.artifacts.Trace) });
    } finally {
      await chrome.kill();
    }
  }
}
writeFileSync(spec.out, `${JSON.stringify(results, null, 2)}\n`);
