// The sample's page: <div id="root" data-proxy-endpoint data-agent-id data-view>.
import { createApp } from 'vue';
import { CustomButton, Toggle, WithLauncher } from './App.js';

const root = document.getElementById('root');
const { proxyEndpoint, agentId, view } = root.dataset;
const View = { launcher: WithLauncher, custom: CustomButton, toggle: Toggle }[view];
createApp(View, { proxyEndpoint, agentId }).mount(root);
