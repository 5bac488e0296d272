// The sample's page: <div id="root" data-proxy-endpoint data-agent-id data-view [data-strict]>.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { CustomButton, Toggle, WithLauncher } from './App.jsx';

const root = document.getElementById('root');
const { proxyEndpoint, agentId, view, strict } = root.dataset;
const View = { launcher: WithLauncher, custom: CustomButton, toggle: Toggle }[view];
const app = <View proxyEndpoint={proxyEndpoint} agentId={agentId} />;
createRoot(root).render(strict === undefined ? app : <StrictMode>{app}</StrictMode>);
