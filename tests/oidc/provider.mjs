// A standards OpenID Connect provider (node's `oidc-provider`, certified
// by the OpenID Foundation) for pushwerk's integration tests, on loopback.
//
// Environment: OIDC_PORT (listen on 127.0.0.1:PORT), OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI, OIDC_CONSENT (the scopes the
// "user" consents to; the others asked for are declined).
//
// The "user" is automatic: /interaction/:uid signs in `user-1` and consents
// to OIDC_CONSENT at once, so a test drives the browser part with plain
// HTTP requests following redirects. Everything else is oidc-provider's own
// behaviour: `offline_access` only with `prompt=consent` (OpenID Connect
// Core §11), refresh tokens only with `offline_access`, `invalid_scope`
// for a refresh asking beyond the grant, PKCE, refresh-token rotation.
import http from 'node:http';
import Provider from 'oidc-provider';

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
};

const port = Number(env('OIDC_PORT'));
const consent = env('OIDC_CONSENT').split(' ').filter(Boolean);
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: env('OIDC_CLIENT_ID'),
    client_secret: env('OIDC_CLIENT_SECRET'),
    redirect_uris: [env('OIDC_REDIRECT_URI')],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  cookies: { keys: ['pushwerk-test-only-cookie-key'] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { AccessToken: 300 },
});

const callback = provider.callback();
http.createServer(async (req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    callback(req, res);
    return;
  }
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      await provider.interactionFinished(req, res, { login: { accountId: 'user-1' } }, { mergeWithLastSubmission: false });
      return;
    }
    const asked = String(details.params.scope).split(' ');
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const yes = asked.filter((s) => consent.includes(s));
    const no = asked.filter((s) => !consent.includes(s));
    if (yes.length) grant.addOIDCScope(yes.join(' '));
    if (no.length) grant.rejectOIDCScope(no.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  } catch (e) {
    res.statusCode = 500;
    res.end(`interaction failed: ${e}`);
  }
}).listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
