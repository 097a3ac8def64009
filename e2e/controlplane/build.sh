#!/usr/bin/env bash
# Build the loopback control plane's binaries from their Go modules, once per pinned version.
#
# Everything comes through the Go module proxy (no container images, no release tarballs), lands in
#   ${UNDERSTUDY_CACHE:-$HOME/.cache/understudy}/bin/<name>-<version>/<name>
# and is reused on the next run. The CRDs the harness installs (Istio, Gateway API) and the
# prometheus-operator's monitoring CRDs are fetched the same way into ${UNDERSTUDY_CACHE}/crds/.
# Versions live in versions.env next to this script.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HERE}/versions.env"

CACHE="${UNDERSTUDY_CACHE:-${HOME}/.cache/understudy}"
BIN_ROOT="${CACHE}/bin"
SRC_ROOT="${CACHE}/src"
CRD_ROOT="${CACHE}/crds"
mkdir -p "${BIN_ROOT}" "${SRC_ROOT}" "${CRD_ROOT}"

# Static, reproducible-ish binaries; a newer toolchain is fetched through the proxy only if a go.mod demands it.
export CGO_ENABLED=0
export GOTOOLCHAIN="${UNDERSTUDY_GOTOOLCHAIN:-auto}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
BUILD_DATE="1970-01-01T00:00:00Z"

log() { printf '[build.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Several engineers (and `make test` runs) may call this at once: one builder at a time per cache.
exec 9>"${CACHE}/.build.lock"
if ! flock -n 9; then
  log "another build holds ${CACHE}/.build.lock; waiting"
  flock 9
fi

BUILT=0
REUSED=0

# Scratch outputs live next to the final binaries (same filesystem, so mv is atomic); an interrupted
# run must not leave them behind.
cleanup_scratch() { rm -rf "${BIN_ROOT}"/.gobin.* "${BIN_ROOT}"/.*.tmp.* 2>/dev/null || true; }
trap cleanup_scratch EXIT

# cached NAME VERSION -> 0 when the binary is already in the cache.
cached() {
  local out="${BIN_ROOT}/$1-$2/$1"
  if [[ -x "${out}" ]]; then
    log "reused cache: $1 $2 (${out})"
    REUSED=$((REUSED + 1))
    return 0
  fi
  return 1
}

# install_binary NAME VERSION TMPFILE: atomic move so an interrupted build never leaves a half binary.
install_binary() {
  local dir="${BIN_ROOT}/$1-$2"
  mkdir -p "${dir}"
  mv -f "$3" "${dir}/$1"
  chmod 0755 "${dir}/$1"
  BUILT=$((BUILT + 1))
}

# go_build NAME VERSION MODULE_DIR PACKAGE LDFLAGS: one binary per `go build`, timed.
go_build() {
  local name="$1" version="$2" moddir="$3" pkg="$4" ldflags="$5"
  local tmp start
  tmp="$(mktemp "${BIN_ROOT}/.${name}.tmp.XXXXXX")"
  start=$(date +%s)
  log "building ${name} ${version} from ${pkg}"
  (cd "${moddir}" && go build -trimpath -ldflags "-s -w ${ldflags}" -o "${tmp}" "${pkg}")
  install_binary "${name}" "${version}" "${tmp}"
  log "built ${name} ${version} in $(($(date +%s) - start))s"
}

# ---------------------------------------------------------------------------------------------
# Kubernetes: `go install k8s.io/kubernetes/cmd/...@v1.X` is refused because its go.mod replaces the
# staging modules (k8s.io/api, ...) with local directories. A wrapper module requires the release and
# replaces each staging module with its published v0.X.Y tag, the list read from the release's go.mod.
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

k8s_wrapper() {
  local dir="${SRC_ROOT}/kubernetes-${KUBERNETES_VERSION}"
  if [[ -f "${dir}/.ready" ]]; then
    echo "${dir}"
    return
  fi
  log "preparing wrapper module for k8s.io/kubernetes ${KUBERNETES_VERSION}"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  local gomod goline
  gomod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "${gomod}" ]] || { log "could not resolve go.mod of k8s.io/kubernetes@${KUBERNETES_VERSION}"; exit 1; }
  goline="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "${gomod}")"
  {
    echo "module understudy.invalid/kubernetes-build"
    echo
    echo "go ${goline}"
    echo
    echo "require k8s.io/kubernetes ${KUBERNETES_VERSION}"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*$#\1#p' "${gomod}" |
      while read -r mod; do echo "	${mod} => ${mod} ${KUBERNETES_STAGING_VERSION}"; done
    echo ")"
  } >"${dir}/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "// Package tools pins the commands this wrapper module builds."
    echo "package tools"
    echo
    echo "import ("
    for cmd in "${K8S_COMMANDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/${cmd}\""; done
    echo ")"
  } >"${dir}/tools.go"
  (cd "${dir}" && go mod tidy)
  touch "${dir}/.ready"
  echo "${dir}"
}

build_kubernetes() {
  local missing=()
  for cmd in "${K8S_COMMANDS[@]}"; do
    cached "${cmd}" "${KUBERNETES_VERSION}" || missing+=("${cmd}")
  done
  ((${#missing[@]})) || return 0
  local dir major minor ldflags pkgs
  dir="$(k8s_wrapper)"
  major="${KUBERNETES_VERSION#v}"; major="${major%%.*}"
  minor="${KUBERNETES_VERSION#v*.}"; minor="${minor%%.*}"
  ldflags=""
  for pkgs in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkgs}.gitVersion=${KUBERNETES_VERSION}"
    ldflags+=" -X ${pkgs}.gitMajor=${major} -X ${pkgs}.gitMinor=${minor}"
    ldflags+=" -X ${pkgs}.gitTreeState=clean -X ${pkgs}.buildDate=${BUILD_DATE}"
  done
  for cmd in "${missing[@]}"; do
    go_build "${cmd}" "${KUBERNETES_VERSION}" "${dir}" "k8s.io/kubernetes/cmd/${cmd}" "${ldflags}"
  done
}

# ---------------------------------------------------------------------------------------------
# etcd 3.6: the `etcd` main is go.etcd.io/etcd/server/v3, whose go.mod also uses local replaces;
# a wrapper module requiring it at the release tag resolves every sibling module from the proxy.
build_etcd() {
  cached etcd "${ETCD_VERSION}" && return 0
  local dir="${SRC_ROOT}/etcd-${ETCD_VERSION}"
  if [[ ! -f "${dir}/.ready" ]]; then
    log "preparing wrapper module for go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
    rm -rf "${dir}"
    mkdir -p "${dir}"
    local mod
    {
      echo "module understudy.invalid/etcd-build"
      echo
      echo "go 1.24"
      echo
      echo "require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
      echo
      echo "replace ("
      for mod in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
        echo "	go.etcd.io/etcd/${mod} => go.etcd.io/etcd/${mod} ${ETCD_VERSION}"
      done
      echo ")"
    } >"${dir}/go.mod"
    printf '//go:build tools\n\n// Package tools pins the etcd server main.\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"${dir}/tools.go"
    (cd "${dir}" && go mod tidy)
    touch "${dir}/.ready"
  fi
  go_build etcd "${ETCD_VERSION}" "${dir}" go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=release-${ETCD_VERSION}"
}

# ---------------------------------------------------------------------------------------------
# kwok and helm have no local replaces: plain `go install module/cmd/x@version` into a scratch GOBIN.
go_install() {
  local name="$1" version="$2" pkg="$3" ldflags="$4"
  cached "${name}" "${version}" && return 0
  local gobin start
  gobin="$(mktemp -d "${BIN_ROOT}/.gobin.XXXXXX")"
  start=$(date +%s)
  log "installing ${name} ${version} from ${pkg}"
  GOBIN="${gobin}" go install -trimpath -ldflags "-s -w ${ldflags}" "${pkg}@${version}"
  install_binary "${name}" "${version}" "${gobin}/${name}"
  rmdir "${gobin}"
  log "built ${name} ${version} in $(($(date +%s) - start))s"
}

build_kwok() {
  local kube="${KUBERNETES_VERSION#v}"
  go_install kwok "${KWOK_VERSION}" sigs.k8s.io/kwok/cmd/kwok \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${kube}"
}

build_helm() {
  local h="helm.sh/helm/v3"
  # helm's own Makefile derives the default Kubernetes version from the client-go it was built with (v0.37 -> 1.37).
  go_install helm "${HELM_VERSION}" "${h}/cmd/helm" \
    "-X ${h}/internal/version.version=${HELM_VERSION} -X ${h}/internal/version.gitTreeState=clean \
     -X ${h}/pkg/lint/rules.k8sVersionMajor=1 -X ${h}/pkg/lint/rules.k8sVersionMinor=37 \
     -X ${h}/pkg/chartutil.k8sVersionMajor=1 -X ${h}/pkg/chartutil.k8sVersionMinor=37"
}

# The release check's tools: an OCI registry for `helm push`/`helm install oci://`, and the workflow linter.
build_registry() {
  local d="github.com/distribution/distribution/v3"
  go_install registry "${DISTRIBUTION_VERSION}" "${d}/cmd/registry" "-X ${d}/version.version=${DISTRIBUTION_VERSION}"
}

build_actionlint() {
  go_install actionlint "${ACTIONLINT_VERSION}" github.com/rhysd/actionlint/cmd/actionlint \
    "-X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION}"
}

# ---------------------------------------------------------------------------------------------
# CRDs: real upstream definitions, fetched as module zips and copied into the cache (not into git).
module_dir() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

fetch_crds() {
  local istio="${CRD_ROOT}/istio-${ISTIO_API_VERSION}" gw="${CRD_ROOT}/gateway-api-${GATEWAY_API_VERSION}"
  if [[ -s "${istio}/customresourcedefinitions.gen.yaml" ]]; then
    log "reused cache: istio CRDs ${ISTIO_API_VERSION}"
  else
    local src
    src="$(module_dir "istio.io/api@${ISTIO_API_VERSION}")"
    mkdir -p "${istio}"
    cp "${src}/kubernetes/customresourcedefinitions.gen.yaml" "${istio}/.tmp.yaml"
    chmod 0644 "${istio}/.tmp.yaml"
    mv "${istio}/.tmp.yaml" "${istio}/customresourcedefinitions.gen.yaml"
    log "fetched istio CRDs ${ISTIO_API_VERSION}"
  fi
  if compgen -G "${gw}/*httproutes.yaml" >/dev/null; then
    log "reused cache: gateway-api CRDs ${GATEWAY_API_VERSION}"
  else
    local src
    src="$(module_dir "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}")"
    rm -rf "${gw}.tmp"
    mkdir -p "${gw}.tmp"
    cp "${src}"/config/crd/standard/*.yaml "${gw}.tmp/"
    chmod 0644 "${gw}.tmp"/*.yaml
    rm -rf "${gw}"
    mv "${gw}.tmp" "${gw}"
    log "fetched gateway-api standard CRDs ${GATEWAY_API_VERSION}"
  fi
  # The Inference Extension's InferencePool (the v1 API, group inference.networking.k8s.io), from its module.
  local gie="${CRD_ROOT}/gateway-api-inference-extension-${GATEWAY_API_INFERENCE_EXTENSION_VERSION}"
  if [[ -s "${gie}/inference.networking.k8s.io_inferencepools.yaml" ]]; then
    log "reused cache: inference extension CRDs ${GATEWAY_API_INFERENCE_EXTENSION_VERSION}"
  else
    local src
    src="$(module_dir "sigs.k8s.io/gateway-api-inference-extension@${GATEWAY_API_INFERENCE_EXTENSION_VERSION}")"
    rm -rf "${gie}.tmp"
    mkdir -p "${gie}.tmp"
    cp "${src}/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml" "${gie}.tmp/"
    chmod 0644 "${gie}.tmp"/*.yaml
    rm -rf "${gie}"
    mv "${gie}.tmp" "${gie}"
    log "fetched inference extension CRDs ${GATEWAY_API_INFERENCE_EXTENSION_VERSION}"
  fi
  # The prometheus-operator's ServiceMonitor and PrometheusRule, as it publishes them with its module.
  local promop="${CRD_ROOT}/prometheus-operator-${PROMETHEUS_OPERATOR_VERSION}" kind
  if [[ -s "${promop}/monitoring.coreos.com_prometheusrules.yaml" ]]; then
    log "reused cache: prometheus-operator CRDs ${PROMETHEUS_OPERATOR_VERSION}"
  else
    local src
    src="$(module_dir "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}")"
    rm -rf "${promop}.tmp"
    mkdir -p "${promop}.tmp"
    for kind in servicemonitors prometheusrules; do
      cp "${src}/example/prometheus-operator-crd/monitoring.coreos.com_${kind}.yaml" "${promop}.tmp/"
    done
    chmod 0644 "${promop}.tmp"/*.yaml
    rm -rf "${promop}"
    mv "${promop}.tmp" "${promop}"
    log "fetched prometheus-operator CRDs ${PROMETHEUS_OPERATOR_VERSION}"
  fi
}

# kwok's default stages (node initialize + lease heartbeat, pod ready/complete/delete) ship in its module
# as YAML; the standalone binary needs them passed via --config, so copy them next to the binary.
fetch_kwok_stages() {
  local dest="${CACHE}/kwok-stages-${KWOK_VERSION}"
  if [[ -s "${dest}/stages.yaml" ]]; then
    log "reused cache: kwok stages ${KWOK_VERSION}"
    return 0
  fi
  local src f
  src="$(module_dir "sigs.k8s.io/kwok@${KWOK_VERSION}")/kustomize/stage"
  mkdir -p "${dest}"
  : >"${dest}/.tmp.yaml"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    { echo "---"; cat "${src}/${f}"; } >>"${dest}/.tmp.yaml"
  done
  mv "${dest}/.tmp.yaml" "${dest}/stages.yaml"
  log "fetched kwok default stages ${KWOK_VERSION}"
}

START=$(date +%s)
# Order: what the harness needs first (etcd, apiserver, kwok), then the rest.
fetch_crds
fetch_kwok_stages
build_etcd
build_kubernetes
build_kwok
build_helm
build_registry
build_actionlint
log "done in $(($(date +%s) - START))s: ${BUILT} built, ${REUSED} reused from ${BIN_ROOT}"
