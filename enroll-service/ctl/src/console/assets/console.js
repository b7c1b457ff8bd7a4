// oxroot console: live batch progress through server-sent events.
//
// Every page works without this script. With it, the batch page's counts, progress bar and
// event table follow the batch as the service reports it (WatchBatch, relayed by the console
// at data-events). Text from the server is only ever assigned to textContent, never parsed as
// HTML. No third-party code, no build step: this file is served as it is.
'use strict';

(function () {
  const live = document.getElementById('live');
  if (!live || !live.dataset.events || !window.EventSource) {
    return;
  }
  const status = document.getElementById('live-status');
  const bar = document.getElementById('batch-progress');
  const percent = document.getElementById('batch-percent');
  const events = document.getElementById('events');
  const note = document.getElementById('events-note');
  // Newest first; older rows go once the table is this long.
  const maxRows = 200;
  const source = new EventSource(live.dataset.events);

  function setStatus(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function cell(text) {
    const td = document.createElement('td');
    td.textContent = text;
    return td;
  }

  source.addEventListener('open', function () {
    setStatus('live');
  });

  source.addEventListener('progress', function (message) {
    const progress = JSON.parse(message.data);
    for (const [key, value] of Object.entries(progress.counts)) {
      const figure = live.querySelector('[data-count="' + key + '"]');
      if (figure) {
        figure.textContent = String(value);
      }
    }
    if (bar) {
      bar.max = Math.max(progress.counts.total, 1);
      bar.value = progress.counts.onboarded;
      bar.textContent = progress.percent + ' %';
    }
    if (percent) {
      percent.textContent = progress.percent + ' %';
    }
    live.dataset.percent = String(progress.percent);
    setStatus('live, as of ' + progress.time);
  });

  source.addEventListener('device', function (message) {
    const event = JSON.parse(message.data);
    const row = document.createElement('tr');
    if (event.refused) {
      row.className = 'refused';
    }
    row.appendChild(cell(event.time));
    const device = document.createElement('td');
    const link = document.createElement('a');
    // A path on this console ("/devices/<DeviceId>"), made by the console.
    link.setAttribute('href', event.href);
    const code = document.createElement('code');
    code.textContent = event.device_id;
    link.appendChild(code);
    device.appendChild(link);
    row.appendChild(device);
    row.appendChild(cell(event.kind));
    row.appendChild(cell(event.detail + (event.refused && event.reference ? ' (ref ' + event.reference + ')' : '')));
    events.insertBefore(row, events.firstChild);
    while (events.rows.length > maxRows) {
      events.deleteRow(events.rows.length - 1);
    }
    if (note) {
      note.hidden = true;
    }
  });

  // The watch ended on the service's side (the batch is gone, or access was revoked): stop,
  // instead of letting EventSource reconnect for ever.
  source.addEventListener('failed', function (message) {
    source.close();
    setStatus('stopped: ' + JSON.parse(message.data).message);
  });

  source.addEventListener('error', function () {
    setStatus(source.readyState === EventSource.CLOSED ? 'disconnected; reload the page' : 'reconnecting…');
  });
})();
