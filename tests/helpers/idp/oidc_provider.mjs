// A real OpenID provider (npm `oidc-provider`) for the identity tests, configured from a JSON file:
//   node oidc_provider.mjs CONFIG.json
// CONFIG: {port, issuer, jwks: {keys: [private JWKs]}, clients: [...], accounts: {id: {claims}}}.
// Prints "ready <port>" once listening. SIGHUP re-reads the JWKS from CONFIG (key rotation).
import fs from 'node:fs';
import Provider from 'oidc-provider';

const path = process.argv[2];
const config = JSON.parse(fs.readFileSync(path, 'utf8'));

function build(cfg) {
  const provider = new Provider(cfg.issuer, {
    clients: cfg.clients,
    jwks: cfg.jwks,
    pkce: { required: () => true },
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email'], groups: ['groups'] },
    scopes: ['openid', 'profile', 'email', 'groups'],
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true } },
    ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 600 },
    async findAccount(ctx, id) {
      const account = cfg.accounts[id];
      if (!account) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...account }; } };
    },
  });
  provider.proxy = false;
  return provider;
}

let provider = build(config);
const server = (await import('node:http')).createServer((req, res) => provider.callback()(req, res));
process.on('SIGHUP', () => {
  // Rotation: the new key set replaces the old one; sessions in flight are not needed by the tests.
  const next = JSON.parse(fs.readFileSync(path, 'utf8'));
  provider = build(next);
  process.stdout.write('reloaded\n');
});
server.listen(config.port, '127.0.0.1', () => process.stdout.write(`ready ${server.address().port}\n`));
