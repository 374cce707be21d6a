#!/usr/bin/env bash
# Install or upgrade the Enclave appliance from this offline bundle. Nothing is fetched from any
# network: pip runs with --no-index on this bundle's wheels/ and with every pip setting cleared.
#
#   First install:  sudo ./install.sh --fingerprint HEX
#                   HEX is the bundle signing key's fingerprint, given to you by the bundle's
#                   publisher through another channel (`enclave bundle verify` prints it).
#   Upgrade:        sudo ./install.sh
#                   the installed appliance checks this bundle against the key it pinned at first
#                   install and refuses an older, tampered or foreign bundle before touching anything.
#
# Options:
#   --prefix DIR        where releases live (default /opt/enclave; the appliance is DIR/current/bin/enclave)
#   --data DIR          the appliance's data directory (default /var/lib/enclave)
#   --python PY         the Python @PYTHON@ interpreter to create the virtual environment with
#   --fingerprint HEX   the signing key's fingerprint (required for a first install)
#   --user NAME         the service user (default enclave)
#   --admin NAME        first install: the first admin's username (default admin)
#   --database-url URL  first install: PostgreSQL shared by several replicas (default: SQLite in --data)
#   --no-service-user   do not create a service user or change ownership (tests; non-root installs)
#   --no-systemd        do not install, stop or start the systemd unit
set -euo pipefail

BUNDLE_VERSION="@VERSION@"
PACKAGE="@PACKAGE@"
GPU=@GPU@
PYTHON_WANTED="@PYTHON@"

BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PREFIX=/opt/enclave
DATA=/var/lib/enclave
PY=""
FINGERPRINT=""
SERVICE_USER=enclave
CREATE_USER=1
SYSTEMD=1
ADMIN=admin
DATABASE_URL=""

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --data) DATA=${2:?--data needs a directory}; shift 2 ;;
        --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
        --fingerprint) FINGERPRINT=${2:?--fingerprint needs a value}; shift 2 ;;
        --user) SERVICE_USER=${2:?--user needs a name}; shift 2 ;;
        --admin) ADMIN=${2:?--admin needs a name}; shift 2 ;;
        --database-url) DATABASE_URL=${2:?--database-url needs a URL}; shift 2 ;;
        --no-service-user) CREATE_USER=0; shift ;;
        --no-systemd) SYSTEMD=0; shift ;;
        -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# pip sees this bundle and nothing else: no configuration file, no index, no mirror, no cache.
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_REQUIREMENT PIP_TRUSTED_HOST
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONNOUSERSITE=1

if [ -z "$PY" ]; then
    for candidate in "python$PYTHON_WANTED" python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
    done
fi
[ -n "$PY" ] || die "no Python $PYTHON_WANTED found; pass --python"
have=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || die "$PY does not run"
[ "$have" = "$PYTHON_WANTED" ] || die "this bundle's wheels are for Python $PYTHON_WANTED, but $PY is $have (pass --python)"

ROOT=0
[ "$(id -u)" = 0 ] && ROOT=1
if [ "$CREATE_USER" = 1 ] && [ "$ROOT" = 0 ]; then
    die "creating the service user needs root (run with sudo, or pass --no-service-user)"
fi
if [ "$SYSTEMD" = 1 ] && { [ "$ROOT" = 0 ] || ! command -v systemctl >/dev/null 2>&1; }; then
    say "no systemd unit will be installed (needs root and systemctl)"
    SYSTEMD=0
fi

mkdir -p "$PREFIX/releases" "$DATA"
PREFIX=$(cd "$PREFIX" && pwd -P)
DATA=$(cd "$DATA" && pwd -P)
CURRENT="$PREFIX/current"
PINNED="$PREFIX/bundle-signing.pub"
INSTALLED="$PREFIX/installed-manifest.json"
WHEEL=$(find "$BUNDLE/wheels" -maxdepth 1 -name 'enclave_codegen-*.whl' 2>/dev/null | head -n 1)
[ -n "$WHEEL" ] || die "$BUNDLE is not an Enclave offline bundle (wheels/enclave_codegen-*.whl is missing)"

# 1. Judge the bundle before anything is installed.
if [ -f "$INSTALLED" ] && cmp -s "$BUNDLE/manifest.json" "$INSTALLED"; then
    say "bundle $BUNDLE_VERSION is already installed at $CURRENT; nothing to do"
    exit 0
fi
if [ -x "$CURRENT/bin/enclave" ] && [ -f "$PINNED" ]; then
    MODE=upgrade
    # The installed appliance (code the site already trusts) checks signer, files and version.
    "$CURRENT/bin/enclave" bundle verify "$BUNDLE" --key "$PINNED" --installed "$INSTALLED" \
        || die "bundle refused; nothing was changed"
else
    MODE=install
    [ -n "$FINGERPRINT" ] || die "first install: pass --fingerprint with the signing key fingerprint from the bundle's publisher"
    # Every file against the manifest, with the system Python and the standard library only,
    # before pip reads a single wheel; the signature is checked once cryptography is installed.
    # The checker comes from the bundle's own wheel, so that wheel is checked first, inline.
    rel="wheels/$(basename "$WHEEL")"
    "$PY" -c 'import hashlib, json, pathlib, sys
root, rel = pathlib.Path(sys.argv[1]), sys.argv[2]
entry = json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("files", {}).get(rel)
ok = isinstance(entry, dict) and hashlib.sha256((root / rel).read_bytes()).hexdigest() == entry.get("sha256")
sys.exit(0 if ok else 1)' "$BUNDLE" "$rel" 2>/dev/null \
        || die "file changed: $rel (sha256 does not match the manifest); bundle refused, nothing was changed"
    PYTHONPATH="$WHEEL" "$PY" -m installers.offline.precheck "$BUNDLE" "$FINGERPRINT" || die "bundle refused; nothing was changed"
fi

# 2. The new release, in a virtual environment of its own (the running one is not touched).
BUNDLE_ID=$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:12])' "$BUNDLE/manifest.json")
RELEASE="$PREFIX/releases/$BUNDLE_VERSION-$BUNDLE_ID"
rm -rf "$RELEASE"  # a leftover of an interrupted attempt: `current` never points at it (checked above)
ACTIVATED=0
cleanup() { if [ "$ACTIVATED" = 0 ]; then rm -rf "$RELEASE"; fi; }
trap cleanup EXIT
say "installing $PACKAGE into $RELEASE"
"$PY" -m venv "$RELEASE"
"$RELEASE/bin/python" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" --upgrade pip
"$RELEASE/bin/python" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" "$PACKAGE"
if [ "$GPU" = 1 ]; then
    # onnxruntime (a base dependency) and onnxruntime-gpu install the same `onnxruntime` package;
    # the CUDA build must be the one left on disk.
    "$RELEASE/bin/python" -m pip uninstall --quiet --yes onnxruntime
    "$RELEASE/bin/python" -m pip install --quiet --no-index --find-links "$BUNDLE/wheels" \
        --force-reinstall --no-deps onnxruntime-gpu
fi
if [ "$MODE" = install ]; then
    "$RELEASE/bin/enclave" bundle verify "$BUNDLE" --fingerprint "$FINGERPRINT" \
        || die "bundle refused; nothing was changed"
fi
ENCLAVE="$RELEASE/bin/enclave"

# 3. The service user owns the data directory; the code stays root's.
if [ "$CREATE_USER" = 1 ] && ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating service user $SERVICE_USER"
    useradd --system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 4. Models: each one checked against the keys that signed it (shipped in model-keys/, vouched for
#    by this bundle's signature) before anything changes.
MODEL_KEYS=()
if [ -d "$BUNDLE/model-keys" ]; then
    for pub in "$BUNDLE"/model-keys/*.pub; do MODEL_KEYS+=(--key "$pub"); done
fi
MODELS=()
if [ -d "$BUNDLE/models" ]; then
    [ "${#MODEL_KEYS[@]}" -gt 0 ] || die "the bundle ships models but no model-keys/; rebuild it with --model-key"
    for model in "$BUNDLE"/models/*/; do
        model=${model%/}
        "$ENCLAVE" model verify "$model" "${MODEL_KEYS[@]}" >/dev/null \
            || die "model bundle $model refused; nothing was changed"
        read -r name version < <("$RELEASE/bin/python" -c \
            'import json, sys; d = json.load(open(sys.argv[1])); print(d["name"], d["version"])' "$model/manifest.json")
        if [ -d "$DATA/models/$name/$version" ]; then
            say "model $name version $version is already installed"
        else
            MODELS+=("$model")
        fi
    done
fi

# 5. Data directory: a first install creates it (settings, database, keys, TLS, first admin); the
#    model keys join its trust store.
if [ ! -f "$DATA/enclave.toml" ]; then
    init_args=(--data "$DATA" --admin "$ADMIN")
    [ -n "$DATABASE_URL" ] && init_args+=(--database-url "$DATABASE_URL")
    "$ENCLAVE" init "${init_args[@]}"
    FRESH_DATA=1
else
    FRESH_DATA=0
fi
if [ -d "$BUNDLE/model-keys" ]; then
    mkdir -p "$DATA/keys/trusted_models"
    for pub in "$BUNDLE"/model-keys/*.pub; do
        install -m 0644 "$pub" "$DATA/keys/trusted_models/bundle-$(basename "$pub")"
    done
fi

# 6. Nothing serves while the schema moves and the models change.
if [ "$SYSTEMD" = 1 ] && systemctl is-active --quiet enclave.service; then
    say "stopping enclave.service for the upgrade"
    systemctl stop enclave.service
fi
if [ "$FRESH_DATA" = 0 ]; then
    # The audit chain lives in the database: migrations keep every record, so it simply continues.
    # First, because every other command of the new release expects its own schema.
    say "migrating the database in $DATA"
    "$ENCLAVE" init --data "$DATA" --upgrade
fi
for model in "${MODELS[@]}"; do
    # Verified above; the importer copies and re-verifies it, then swaps the active model in one rename.
    "$ENCLAVE" model import "$model" --data "$DATA"
done
if [ "$CREATE_USER" = 1 ]; then
    chown -R "$SERVICE_USER:$SERVICE_USER" "$DATA"
    chmod 0750 "$DATA"
fi

# 7. Activate: one rename switches `current`, then record what is installed.
ln -sfn "$RELEASE" "$PREFIX/.current.new"
mv -T "$PREFIX/.current.new" "$CURRENT"
ACTIVATED=1
cp "$BUNDLE/manifest.json" "$INSTALLED.new" && mv "$INSTALLED.new" "$INSTALLED"
if [ "$MODE" = install ]; then
    cp "$BUNDLE/signing-key.pub" "$PINNED.new" && mv "$PINNED.new" "$PINNED"
fi
# Keep the release this one replaces (recorded by the run that installed it); older ones go.
keep_prev=""
if [ -f "$PREFIX/.previous" ]; then keep_prev=$(cat "$PREFIX/.previous"); fi
for old in "$PREFIX"/releases/*; do
    [ "$old" = "$RELEASE" ] && continue
    [ "$old" = "$keep_prev" ] && continue
    rm -rf "$old"
done
echo "$RELEASE" > "$PREFIX/.previous"

# 8. The service.
if [ "$SYSTEMD" = 1 ]; then
    sed -e "s|/opt/enclave|$PREFIX|g" -e "s|/var/lib/enclave|$DATA|g" \
        -e "s|^User=enclave|User=$SERVICE_USER|" -e "s|^Group=enclave|Group=$SERVICE_USER|" \
        "$BUNDLE/systemd/enclave.service" > /etc/systemd/system/enclave.service
    systemctl daemon-reload
    systemctl enable --quiet enclave.service
    systemctl restart enclave.service
    say "enclave.service is running"
fi

# 9. How to sign in.
ADDRESS=$("$CURRENT/bin/python" -c 'import sys
from appliance.config import load_settings
s = load_settings(sys.argv[1])
print(f"{s.host}:{s.port}")' "$DATA" 2>/dev/null) || ADDRESS="127.0.0.1:8443"
if [ "$SYSTEMD" = 1 ]; then START="systemctl status enclave"; else START="$CURRENT/bin/enclave serve --data $DATA"; fi
if [ "$FRESH_DATA" = 1 ]; then
    WHO="as '$ADMIN' with the one-time password printed above (a new one is chosen at first sign-in)"
else
    WHO="with the existing accounts"
fi
cat <<EOF

Enclave $BUNDLE_VERSION is installed ($MODE).
  appliance:  $CURRENT/bin/enclave    data: $DATA
  service:    $START
  sign in:    https://$ADDRESS  $WHO,
              trusting the CA certificate $DATA/tls/ca.pem (desktop users pin its fingerprint).
              It listens on $ADDRESS (host and port in $DATA/enclave.toml): put nginx in front
              (sample: $BUNDLE/nginx/enclave.conf) or change host to reach it from the network.
  users:      $CURRENT/bin/enclave user add NAME --data $DATA
  audit:      $CURRENT/bin/enclave audit verify --data $DATA
EOF
