export { RetellWidget } from '../index.js';
