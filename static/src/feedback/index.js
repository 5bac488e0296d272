export default () => Promise.reject(new Error('todo'));
