// The recent-conversations list: one row per stored conversation, newest first, each an
// "open" button titled with the conversation's first question and a "delete" button. It only
// draws; what opening or deleting means is the page's (app.js) business.

/**
 * Draws into `nav` (an element holding a <ul>). `onOpen(id)` and `onDelete(id)` are called
 * from the buttons (event delegation: the rows are rebuilt on every change).
 */
export function createHistory(nav, { onOpen, onDelete }) {
  const ul = nav.querySelector('ul') || nav.appendChild(document.createElement('ul'));
  let disabled = false;

  nav.addEventListener('click', (e) => {
    const btn = e.target instanceof Element ? e.target.closest('button[data-id]') : null;
    if (!btn || btn.disabled) return;
    if (btn.classList.contains('conv-delete')) onDelete(btn.dataset.id);
    else onOpen(btn.dataset.id);
  });

  /** list: [{id, title}] newest first; currentId: the conversation shown; busy: an answer streams. */
  function render(list, currentId, busy) {
    disabled = !!busy;
    nav.hidden = list.length === 0;
    ul.replaceChildren(...list.map(({ id, title }) => {
      const li = document.createElement('li');
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'conv-open ghost';
      open.dataset.id = id;
      open.textContent = title;
      open.title = title;
      open.setAttribute('aria-label', `Open conversation: ${title}`);
      if (id === currentId) open.setAttribute('aria-current', 'true');
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'conv-delete ghost';
      del.dataset.id = id;
      del.textContent = '×';
      del.setAttribute('aria-label', `Delete conversation: ${title}`);
      // Switching away from (or deleting) a conversation while its answer streams would
      // leave that answer without a page to type into: wait for it to end.
      open.disabled = disabled;
      del.disabled = disabled;
      li.append(open, del);
      return li;
    }));
  }

  return { render };
}
