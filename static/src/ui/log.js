// A message log: a scrollable role="log" region whose final entries are read out once, when
// they arrive, and at most one growing line at its end (a reply still coming in, a live
// transcript) that is never read out while it grows (aria-live="off" on its holder). Text
// only: every string goes through textContent, nothing from the agent is ever parsed as HTML.
//   const log = createLog({ label: 'Messages', who: { agent: 'Agent', user: 'You' } });
//   panel.append(log.el);
//   log.add('agent', 'Hello')         -> the entry (a final line, announced)
//   const line = log.grow('user');    line.set('Hel'); line.set('Hello'); line.done();
//   log.clear()
// An entry is <p class="entry" data-role>; `who` names the speaker for screen readers only
// (on screen, the side of the bubble says it). Styles: src/ui/log.css.
export function createLog({ label, who }) {
  const el = document.createElement('div');
  el.className = 'log';
  el.setAttribute('role', 'log');
  el.setAttribute('aria-label', label);
  el.tabIndex = 0; // it scrolls, so the keyboard must reach it
  const holder = document.createElement('div');
  holder.className = 'grow';
  holder.setAttribute('aria-live', 'off');
  el.append(holder);

  const line = (role, text) => {
    const entry = document.createElement('p');
    entry.className = 'entry';
    entry.dataset.role = role;
    const name = document.createElement('span');
    name.className = 'who';
    name.textContent = `${who[role] || role}: `;
    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = text;
    entry.append(name, body);
    return entry;
  };
  // Keep the newest line in view, unless the visitor scrolled up to read.
  const follow = (change) => {
    const pinned = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    change();
    if (pinned) el.scrollTop = el.scrollHeight;
  };

  const log = {
    el,
    add(role, text) {
      const entry = line(role, text);
      follow(() => holder.before(entry));
      return entry;
    },
    grow(role, text = '') {
      const entry = line(role, text);
      follow(() => holder.replaceChildren(entry));
      return {
        entry,
        set: (value) => follow(() => (entry.lastChild.textContent = value)),
        // Final: moves into the log (announced once); an empty line just goes.
        done(value = entry.lastChild.textContent) {
          entry.remove();
          return value ? log.add(role, value) : null;
        },
      };
    },
    clear() {
      el.replaceChildren(holder);
      holder.replaceChildren();
    },
  };
  return log;
}
