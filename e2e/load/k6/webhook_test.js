// k6 load test of the deposit webhook: every request signed (Standard Webhooks),
// custom metrics per endpoint, and the rollout's thresholds: p95 < 2 s, p99 < 5 s,
// errors < 0.5 %. For users who have k6:
//
//   BASE_URL=http://127.0.0.1:8000 WEBHOOK_SECRET=whsec_... k6 run --vus 20 --duration 1m e2e/load/k6/webhook_test.js
//
// The project's own machines do not run k6 (see e2e/load/README.md); `make load` runs
// e2e/load/webhook_load.py, which sends the same signed requests with the same thresholds.
import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/$/, '');
const SECRET = __ENV.WEBHOOK_SECRET;
const USERS = parseInt(__ENV.USERS || '50', 10);
if (!SECRET || !SECRET.startsWith('whsec_')) {
  throw new Error('set WEBHOOK_SECRET to the app\'s whsec_ secret');
}
const KEY = encoding.b64decode(SECRET.slice('whsec_'.length), 'std');

const webhookDuration = new Trend('webhook_duration', true);
const webhookErrors = new Rate('webhook_errors');
const healthDuration = new Trend('health_duration', true);
const depositsAccepted = new Counter('deposits_accepted');

export const options = {
  vus: 20,
  duration: '1m',
  thresholds: {
    webhook_duration: ['p(95)<2000', 'p(99)<5000'],
    webhook_errors: ['rate<0.005'],
    'http_req_failed{endpoint:webhook}': ['rate<0.005'],
    health_duration: ['p(95)<500'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

function signedHeaders(id, timestamp, body) {
  const signature = crypto.hmac('sha256', KEY, `${id}.${timestamp}.${body}`, 'base64');
  return {
    'Content-Type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': `v1,${signature}`,
  };
}

export default function () {
  const id = `msg_k6_${__VU}_${__ITER}_${Date.now()}`;
  const body = JSON.stringify({
    user_id: `load-${Math.floor(Math.random() * USERS)}`,
    amount: (1 + Math.random() * 99).toFixed(2),
    currency: 'EUR',
    provider_reference: `k6-${id}`,
  });
  const timestamp = Math.floor(Date.now() / 1000);
  const res = http.post(`${BASE_URL}/api/v1/webhooks/deposit`, body, {
    headers: signedHeaders(id, timestamp, body),
    tags: { endpoint: 'webhook' },
  });
  const ok = check(res, {
    'webhook is 202': (r) => r.status === 202,
    'webhook returns a tx_id': (r) => r.status === 202 && !!r.json('tx_id'),
  });
  webhookDuration.add(res.timings.duration);
  webhookErrors.add(!ok);
  if (ok) depositsAccepted.add(1);

  if (__ITER % 10 === 0) {
    const health = http.get(`${BASE_URL}/healthz`, { tags: { endpoint: 'health' } });
    check(health, { 'healthz is 200': (r) => r.status === 200 });
    healthDuration.add(health.timings.duration);
  }
}
