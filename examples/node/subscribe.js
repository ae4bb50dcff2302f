// subscribe.js: tail a channel and resume after every drop, from the last
// position seen, with nothing missed and nothing twice; or say plainly
// when that is impossible (recovered: false), so that the state is reloaded.
//
//   node subscribe.js [channel] [offset@epoch]
'use strict';

const { connect, grpc } = require('./connect');

const { client, metadata } = connect();
const channel = process.argv[2] || 'news';
let since = null; // the last position seen: { offset, epoch }
if (process.argv[3]) {
  const [offset, epoch] = process.argv[3].split('@');
  since = { offset, epoch };
}
let delay = 0;

// Codes with which a node ends a subscription that a resubscribe from
// `since` continues: restart, drain or lost connection (UNAVAILABLE), lost
// continuity (ABORTED), a subscriber too slow (RESOURCE_EXHAUSTED), a
// stream that just ended (OK).
const resumable = [grpc.status.UNAVAILABLE, grpc.status.ABORTED, grpc.status.RESOURCE_EXHAUSTED, grpc.status.OK];

function subscribe() {
  const resumed = since !== null;
  const call = client.Subscribe({ channel, since }, metadata);
  call.on('data', (ev) => {
    delay = 0;
    if (ev.event === 'subscribed') {
      const { position, recovered } = ev.subscribed;
      if (resumed && !recovered) {
        console.log(`unrecovered: what came after ${since.offset}@${since.epoch} is lost; reload the state`);
      }
      // A successful resume replays up to `position`, and each replayed
      // publication moves `since`; otherwise we are live from `position`.
      if (!resumed || !recovered) since = position;
      console.log(`subscribed at ${position.offset}@${position.epoch}${resumed ? ` recovered=${recovered}` : ''}`);
    } else if (ev.event === 'publication') {
      const pub = ev.publication;
      if (pub.offset !== '0') since = { offset: pub.offset, epoch: pub.epoch }; // 0: no history kept
      // pub.payload names the field set: 'json' (the exact text) or 'binary' (a Buffer).
      console.log(`${pub.offset}@${pub.epoch} ${pub.payload === 'json' ? pub.json : pub.binary.toString('base64')}`);
    }
  });
  call.on('error', () => {}); // reported by 'status', below
  call.on('status', ({ code, details }) => {
    if (!resumable.includes(code)) {
      console.error(`subscription refused: ${grpc.status[code]}: ${details}`);
      process.exit(1);
    }
    delay = Math.min(delay ? delay * 2 : 100, 5000);
    console.log(`stream ended (${grpc.status[code]}: ${details}); resubscribing in ${delay} ms`);
    setTimeout(subscribe, delay / 2 + Math.random() * delay / 2); // jitter
  });
}

subscribe();
