// Compiled with tsc --noEmit against types/vue.d.ts (tests/widget/test_types_frameworks.py).
// Each @ts-expect-error must meet an error, or the compile fails.
import { defineComponent, h, reactive, ref } from 'vue';
import type { WidgetState } from 'retell-widget';
import { RetellWidget, useRetellWidget } from 'retell-widget/vue';

export const CustomButton = defineComponent({
  setup() {
    const agentId = ref('agent_x');
    const call = useRetellWidget(() => ({ proxyEndpoint: '/api/create-web-call', agentId: agentId.value, ui: false }));
    const state: WidgetState = call.state.value;
    const element: HTMLElement | undefined = call.widget.value?.host;
    // @ts-expect-error: the refs are the widget's, read-only
    call.state.value = 'live';
    void [state, element];
    return () => h('button', { onClick: () => call.start().catch(() => {}) }, call.error.value?.code ?? call.state.value);
  },
});

useRetellWidget({ proxyEndpoint: '/x' });
useRetellWidget(reactive({ proxyEndpoint: '/x', theme: 'dark' as const }));
useRetellWidget(ref({ proxyEndpoint: '/x', onStateChange: (s: WidgetState) => s }));
// @ts-expect-error: not a theme
useRetellWidget({ proxyEndpoint: '/x', theme: 'crimson' });

// What a template (vue-tsc) checks a <RetellWidget> against: its props, events as on* props.
type Props = InstanceType<typeof RetellWidget>['$props'];
export const props: Props = {
  proxyEndpoint: '/api/create-web-call',
  agentId: 'agent_x',
  theme: 'green',
  onCallStart: (d) => d.callId.toUpperCase(),
  onCallEnd: (d) => d.durationMs,
  onError: (e) => e.code,
  onStateChange: (s) => s === 'live',
};
// @ts-expect-error: an event's detail is typed
export const badEvent: Props = { proxyEndpoint: '/x', onCallEnd: (d: { seconds: string }) => d };
// @ts-expect-error: not a mode
export const badMode: Props = { proxyEndpoint: '/x', mode: 'video' };
export const vnode = h(RetellWidget, { proxyEndpoint: '/x', agentId: 'agent_x' });
// @ts-expect-error: not an option
h(RetellWidget, { proxyEndpoint: 1 });
