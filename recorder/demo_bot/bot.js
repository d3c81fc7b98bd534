'use strict';
// A bot written against node-agent-sdk's public API, as its README and example bots show: log in
// (username/password, or a bearer token with its user id), go ONLINE, accept every ring, READ and
// answer every consumer message, and on `closed` reconnect with the README's retry looper
// (reconnect() logs in again, for a fresh token).
//
// Environment: LP_ACCOUNT, LP_CSDS (csdsDomain: where mwtap serve or mwtap record listens),
// LP_USER + LP_PASS, or LP_TOKEN + LP_USER_ID; RECONNECT_DELAY_S (README: 5), RECONNECT_ATTEMPTS
// (README: 35); KEEPALIVE_S: also send GetClock this often (the SDK pings only every 60 s: too
// seldom for a server with a shorter idle timeout, such as mwtap demo's); REPLY_DELAY_S: seconds
// between READ and the answer (default 0). One JSON line per event on stdout, for `mwtap demo`
// and the tests to follow.
const Agent = require('node-agent-sdk').Agent;

const env = process.env;
const conf = {accountId: env.LP_ACCOUNT, csdsDomain: env.LP_CSDS};
if (env.LP_TOKEN) {
    Object.assign(conf, {token: env.LP_TOKEN, userId: env.LP_USER_ID});
} else {
    Object.assign(conf, {username: env.LP_USER, password: env.LP_PASS});
}
const reconnectInterval = Number(env.RECONNECT_DELAY_S || 5);
const reconnectAttempts = Number(env.RECONNECT_ATTEMPTS || 35);
const reconnectRatio = 1.25;
const keepalive = Number(env.KEEPALIVE_S || 0);
const replyDelay = Number(env.REPLY_DELAY_S || 0);

const log = (event, detail) => console.log(JSON.stringify(Object.assign({event}, detail || {})));
const agent = new Agent(conf);
const openConvs = {};
const answered = {};

let connected = false;

agent.on('connected', () => {
    clearTimeout(agent._retryConnection);
    connected = true;
    log('connected');
    agent.setAgentState({availability: 'ONLINE'}, (e) => log('online', {error: e && e.message}));
    agent.subscribeExConversations({agentIds: [agent.agentId], convState: ['OPEN']},
        (e) => log('subscribed-conversations', {error: e && e.message}));
    agent.subscribeRoutingTasks({}, (e) => log('subscribed-routing', {error: e && e.message}));
});

agent.on('routing.RoutingTaskNotification', body => {
    body.changes.forEach(c => {
        if (c.type === 'UPSERT') {
            c.result.ringsDetails.forEach(r => {
                if (r.ringState === 'WAITING') {
                    agent.updateRingState({ringId: r.ringId, ringState: 'ACCEPTED'},
                        (e) => log('ring-accepted', {ring: r.ringId, error: e && e.message}));
                }
            });
        }
    });
});

agent.on('cqm.ExConversationChangeNotification', body => {
    body.changes.forEach(change => {
        const convId = change.result.convId;
        if (change.type === 'UPSERT' && !openConvs[convId] && change.result.conversationDetails.state === 'OPEN') {
            openConvs[convId] = true;
            log('joined', {conversation: convId});
            agent.subscribeMessagingEvents({dialogId: convId, fromSeq: 0});
        } else if (change.type === 'DELETE' || change.result.conversationDetails.state === 'CLOSE') {
            if (openConvs[convId]) log('conversation-closed', {conversation: convId});
            delete openConvs[convId];
        }
    });
});

agent.on('ms.MessagingEventNotification', body => {
    body.changes.forEach(c => {
        const key = `${c.dialogId}-${c.sequence}`;
        if (!openConvs[c.dialogId] || answered[key] || c.event.type !== 'ContentEvent' || c.originatorId === agent.agentId) {
            return;
        }
        answered[key] = true;
        agent.publishEvent({dialogId: c.dialogId, event: {type: 'AcceptStatusEvent', status: 'READ', sequenceList: [c.sequence]}});
        setTimeout(() => {
            if (!openConvs[c.dialogId] || !connected) return;  // closed while the bot was thinking
            agent.publishEvent({dialogId: c.dialogId, event: {type: 'ContentEvent', contentType: 'text/plain',
                message: `bot heard: ${c.event.message}`}}, (e) => log('answered', {sequence: c.sequence, error: e && e.message}));
        }, replyDelay * 1000);
    });
});

agent.on('error', err => log('error', {message: err && err.message, code: err && err.code}));

agent.on('closed', data => {
    connected = false;
    log('closed', {code: data});
    agent._reconnect();
});

agent._reconnect = (delay = reconnectInterval, attempt = 1) => {
    agent._retryConnection = setTimeout(() => {
        agent.reconnect();
        if (++attempt <= reconnectAttempts) {
            agent._reconnect(delay * reconnectRatio, attempt);
        }
    }, delay * 1000);
};

if (keepalive > 0) {
    setInterval(() => connected && agent.getClock({}, () => {}), keepalive * 1000);
}
