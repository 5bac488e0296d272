// A site's own bundle: the widget from the npm package, bundled (and split) by the site's
// esbuild, no CDN. tests/widget/test_widget_package.py builds and serves it.
import { RetellWidget } from 'retell-widget';

const params = new URLSearchParams(location.search);
window.widget = new RetellWidget({
  proxyEndpoint: params.get('endpoint'),
  agentId: 'agent_a',
  theme: 'green',
  lang: params.get('lang') || 'en',
  onCallStart: ({ callId }) => (document.title = callId),
});
