import { computed, defineComponent, ref } from 'vue';
import { RetellWidget, useRetellWidget } from 'retell-widget/vue';

// The drop-in component: the widget's own launcher and panel; the page hears its events.
export const WithLauncher = defineComponent({
  components: { RetellWidget },
  props: { proxyEndpoint: String, agentId: String },
  setup() {
    const log = ref([]);
    return { log, note: (line) => log.value.push(line) };
  },
  template: `
    <RetellWidget :proxy-endpoint="proxyEndpoint" :agent-id="agentId" theme="green"
      @state-change="(state) => note('state ' + state)"
      @call-start="({ callId }) => note('call-start ' + callId)"
      @call-end="({ reason }) => note('call-end ' + reason)"
      @error="({ code }) => note('error ' + code)" />
    <ol id="log"><li v-for="(line, i) in log" :key="i">{{ line }}</li></ol>`,
});

// Headless (ui: false): no launcher, the page draws its own controls from the refs.
export const CustomButton = defineComponent({
  props: { proxyEndpoint: String, agentId: String },
  setup(props) {
    const call = useRetellWidget(() => ({ proxyEndpoint: props.proxyEndpoint, agentId: props.agentId, ui: false }));
    const inCall = computed(() => ['requesting-mic', 'verifying', 'connecting', 'live'].includes(call.state.value));
    // start() rejects with { code, message } when the call cannot start: `error` shows it.
    return { ...call, inCall, begin: () => call.start().catch(() => {}) };
  },
  template: `
    <div class="call">
      <button v-if="inCall" id="call" @click="stop">{{ state === 'live' ? 'Hang up' : 'Cancel' }}</button>
      <button v-else id="call" @click="begin">Call us</button>
      <button id="mute" :disabled="state !== 'live'" :aria-pressed="muted" @click="muted ? unmute() : mute()">
        {{ muted ? 'Unmute' : 'Mute' }}</button>
      <output id="state">{{ state }}</output>
      <output id="call-id">{{ callId ?? '' }}</output>
      <p v-if="error" id="error" role="alert">{{ error.code }}</p>
    </div>`,
});

// Mounting and unmounting (v-if), and a changed prop (replaces the widget).
export const Toggle = defineComponent({
  components: { RetellWidget },
  props: { proxyEndpoint: String, agentId: String },
  setup() {
    return { shown: ref(true), theme: ref('purple'), heard: ref('') };
  },
  template: `
    <button id="toggle" @click="shown = !shown">{{ shown ? 'Remove the widget' : 'Add the widget' }}</button>
    <button id="theme" @click="theme = theme === 'purple' ? 'dark' : 'purple'">Theme: {{ theme }}</button>
    <RetellWidget v-if="shown" :proxy-endpoint="proxyEndpoint" :agent-id="agentId" :theme="theme"
      :labels="{ call: 'Ask us' }" @call-start="heard = 'theme ' + theme" />
    <output id="heard">{{ heard }}</output>`,
});
