#!/usr/bin/env bash
# Pod start-up script (Runpod-style "container start command"): prepares a GPU pod to train.
#
#   bash container-onstart.sh            # set up (idempotent: re-running only does what is missing)
#   bash container-onstart.sh --dry-run  # print the plan, change nothing
#
# Steps: apt packages -> clone or update the repository -> Python venv (the pod's own CUDA torch is
# kept when present; otherwise a CUDA wheel matching the driver) -> project install -> optional GPU
# extras (flash-attn, adam-atan2; failures fall back to the pure-PyTorch paths) -> wandb login ->
# hand over to the image's /start.sh (ssh, jupyter) when there is one.
#
# Environment (all optional):
#   REPO_URL       https URL of the repository        REPO_BRANCH  branch to check out (main)
#                  (credentials in it, https://user:token@host/..., are masked in the log and passed
#                  to git via GIT_ASKPASS: the clone's .git/config keeps the URL without them)
#   WORKSPACE      parent folder (/workspace)          REPO_DIR     checkout folder ($WORKSPACE/<repo name>)
#   GITHUB_TOKEN   token for a private repository (GITHUB_PAT also read); passed via GIT_ASKPASS,
#                  never written to .git/config or printed
#   VENV_DIR       virtual environment ($REPO_DIR/.venv)  PYTHON  interpreter (python3)
#   TORCH_CUDA     wheel tag to install when no torch is present (cu128, cu126, cpu...; default from the driver)
#   KEEP_POD_TORCH 1 (default) reuses an existing torch; 0 always installs the matching wheel
#   GPU_EXTRAS     1 (default) tries flash-attn and adam-atan2 on a GPU; 0 skips them
#   PROJECT_EXTRAS pip extras of the project, e.g. "test,llm" (none by default)
#   WANDB_API_KEY  log in to Weights & Biases;  HF_TOKEN is read by huggingface_hub directly
#   START_SCRIPT   handed over to at the end (/start.sh); set to "" to return instead
set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# Default: the origin of the checkout this script sits in (absent when piped through curl).
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]:-.}")" 2>/dev/null && pwd)"
REPO_URL="${REPO_URL:-$(git -C "$script_dir" remote get-url origin 2>/dev/null || true)}"
if [ -z "$REPO_URL" ]; then
  echo "REPO_URL is not set: give the https URL of this repository (e.g. https://github.com/<org>/<repo>.git)" >&2
  exit 2
fi
# split_url URL: sets URL_CLEAN (no user-info), URL_SHOWN (user-info as ***) and URL_USER/URL_PASS.
# Only http(s) URLs carry secrets this way; ssh's "git@host:org/repo" is left as it is.
split_url() {
  local url="$1" rest authority userinfo
  URL_CLEAN="$url"; URL_SHOWN="$url"; URL_USER=""; URL_PASS=""
  case "$url" in http://*|https://*) ;; *) return 0 ;; esac
  rest="${url#*://}"
  authority="${rest%%/*}"
  case "$authority" in *@*) ;; *) return 0 ;; esac
  userinfo="${authority%@*}"
  URL_CLEAN="${url%%://*}://${authority##*@}${rest:${#authority}}"
  URL_SHOWN="${url%%://*}://***@${authority##*@}${rest:${#authority}}"
  URL_USER="${userinfo%%:*}"
  if [ "$userinfo" != "$URL_USER" ]; then URL_PASS="${userinfo#*:}"; fi
}
split_url "$REPO_URL"
REPO_URL="$URL_CLEAN"  # from here on the URL holds no secret; the credentials stay in URL_USER/URL_PASS
REPO_BRANCH="${REPO_BRANCH:-main}"
WORKSPACE="${WORKSPACE:-/workspace}"
REPO_NAME="$(basename "${REPO_URL%.git}")"
REPO_DIR="${REPO_DIR:-$WORKSPACE/$REPO_NAME}"
VENV_DIR="${VENV_DIR:-$REPO_DIR/.venv}"
PYTHON="${PYTHON:-python3}"
KEEP_POD_TORCH="${KEEP_POD_TORCH:-1}"
GPU_EXTRAS="${GPU_EXTRAS:-1}"
PROJECT_EXTRAS="${PROJECT_EXTRAS:-}"
START_SCRIPT="${START_SCRIPT-/start.sh}"
GIT_TOKEN="${GITHUB_TOKEN:-${GITHUB_PAT:-}}"
APT_PACKAGES=(git curl ca-certificates build-essential ninja-build python3-dev python3-venv pkg-config)
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
# run CMD...: print it, and execute it unless --dry-run.
run() {
  printf '   + %s\n' "$*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
# try CMD...: like run, but a failure is reported and set-up goes on.
try() {
  if ! run "$@"; then
    info "[warn] failed (continuing without it): $*"
    return 1
  fi
}

# Wheel tag (cuXYZ) for the highest CUDA the driver supports, among those PyTorch publishes.
cuda_tag_for_driver() {
  local version major minor
  if ! command -v nvidia-smi >/dev/null 2>&1; then echo cpu; return; fi
  version="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -n1)"
  if [ -z "$version" ]; then echo cpu; return; fi
  major="${version%%.*}"; minor="${version#*.}"
  if [ "$major" -ge 13 ] || { [ "$major" -eq 12 ] && [ "$minor" -ge 8 ]; }; then echo cu128
  elif [ "$major" -eq 12 ] && [ "$minor" -ge 6 ]; then echo cu126
  elif [ "$major" -eq 12 ]; then echo cu121
  else echo cu118
  fi
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

[ "$DRY_RUN" = 1 ] && echo "[dry run] nothing will be changed"

# 1. System packages -----------------------------------------------------------------------------
step "1/7 system packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  info "all present: ${APT_PACKAGES[*]}"
elif command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  run $SUDO apt-get update -qq
  run $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  info "[warn] no apt-get; install these yourself if needed: ${missing[*]}"
fi

# 2. Repository ----------------------------------------------------------------------------------
step "2/7 repository $URL_SHOWN ($REPO_BRANCH) -> $REPO_DIR"
askpass=""
git_user="" git_secret=""
if [ -n "$URL_USER$URL_PASS" ]; then
  git_user="$URL_USER" git_secret="$URL_PASS"
  info "private access: credentials from REPO_URL via GIT_ASKPASS (not stored in .git/config)"
elif [ -n "$GIT_TOKEN" ]; then
  git_user="x-access-token" git_secret="$GIT_TOKEN"
  info "private access: token from GITHUB_TOKEN/GITHUB_PAT via GIT_ASKPASS"
fi
if [ -n "$git_user$git_secret" ] && [ "$DRY_RUN" = 0 ]; then
  # The secret reaches git through an askpass helper reading the environment: it never appears
  # in a command line, the remote URL or this log.
  askpass="$(mktemp)"
  # shellcheck disable=SC2016  # $1 and $GIT_ASKPASS_* are for the helper to expand, not us
  printf '#!/bin/sh\ncase "$1" in Username*) echo "$GIT_ASKPASS_USER" ;; *) echo "$GIT_ASKPASS_TOKEN" ;; esac\n' >"$askpass"
  chmod 700 "$askpass"
  trap 'rm -f "$askpass"' EXIT
  export GIT_ASKPASS="$askpass" GIT_ASKPASS_USER="$git_user" GIT_ASKPASS_TOKEN="$git_secret" GIT_TERMINAL_PROMPT=0
fi
if [ -d "$REPO_DIR/.git" ]; then
  # A checkout made with credentials in its URL (by hand, or by an older version of this script)
  # keeps them in .git/config: store the URL without them.
  split_url "$(git -C "$REPO_DIR" remote get-url origin 2>/dev/null || true)"
  if [ "$URL_CLEAN" != "$URL_SHOWN" ]; then
    info "origin URL holds credentials ($URL_SHOWN): removing them from .git/config"
    run git -C "$REPO_DIR" remote set-url origin "$URL_CLEAN"
  fi
  run git -C "$REPO_DIR" fetch --quiet origin "$REPO_BRANCH"
  # Fast-forward only: local edits on the pod are never overwritten.
  try git -C "$REPO_DIR" merge --ff-only --quiet "origin/$REPO_BRANCH" || true
else
  run mkdir -p "$(dirname "$REPO_DIR")"
  run git clone --quiet --branch "$REPO_BRANCH" "$REPO_URL" "$REPO_DIR"
fi
# Later steps (pip, the start script) do not need the git credentials.
unset GIT_ASKPASS GIT_ASKPASS_USER GIT_ASKPASS_TOKEN git_secret URL_USER URL_PASS
if [ -n "$askpass" ]; then rm -f "$askpass"; fi

# 3. Virtual environment -------------------------------------------------------------------------
step "3/7 virtual environment $VENV_DIR"
# --system-site-packages lets the venv see the image's CUDA torch instead of downloading another.
if [ -x "$VENV_DIR/bin/python" ]; then
  info "exists, reused"
else
  run "$PYTHON" -m venv --system-site-packages "$VENV_DIR"
fi
VPY="$VENV_DIR/bin/python"
[ "$DRY_RUN" = 1 ] && [ ! -x "$VPY" ] && VPY="$PYTHON"  # plan with the base interpreter
run "$VPY" -m pip install --quiet --upgrade pip wheel setuptools
line="source $VENV_DIR/bin/activate"
if [ -f "$HOME/.bashrc" ] && grep -qxF "$line" "$HOME/.bashrc"; then
  info "$HOME/.bashrc already activates the venv"
elif [ "$DRY_RUN" = 1 ]; then
  info "+ append '$line' to $HOME/.bashrc"
else
  echo "$line" >>"$HOME/.bashrc"
fi

# 4. PyTorch -------------------------------------------------------------------------------------
step "4/7 PyTorch"
pod_torch="$("$VPY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || true)"
if [ -n "$pod_torch" ] && [ "$KEEP_POD_TORCH" = 1 ] && ! { has_gpu && [[ "$pod_torch" == *"cuda None" ]]; }; then
  info "keeping the installed torch: $pod_torch"
else
  tag="${TORCH_CUDA:-$(cuda_tag_for_driver)}"
  info "driver -> wheel tag $tag"
  if [ -n "$pod_torch" ]; then
    # --ignore-installed puts the new build in the venv, shadowing the image's (left untouched).
    info "replacing torch $pod_torch (CPU-only build on a GPU pod, or KEEP_POD_TORCH=0)"
    run "$VPY" -m pip install --quiet --ignore-installed torch --index-url "https://download.pytorch.org/whl/$tag"
  else
    run "$VPY" -m pip install --quiet torch --index-url "https://download.pytorch.org/whl/$tag"
  fi
fi

# 5. Project -------------------------------------------------------------------------------------
step "5/7 project dependencies"
target="$REPO_DIR"
[ -n "$PROJECT_EXTRAS" ] && target="${REPO_DIR}[${PROJECT_EXTRAS}]"
# pip keeps the torch above: the project only asks for torch>=2.4.
run "$VPY" -m pip install --quiet -e "$target"

# 6. GPU extras ----------------------------------------------------------------------------------
step "6/7 optional GPU extras"
if [ "$GPU_EXTRAS" != 1 ]; then
  info "skipped (GPU_EXTRAS=$GPU_EXTRAS)"
elif ! has_gpu; then
  info "no GPU found: skipped (the model uses PyTorch SDPA attention and a pure-PyTorch AdamATan2)"
else
  try "$VPY" -m pip install --quiet --no-build-isolation flash-attn ||
    info "flash-attn unavailable: attention falls back to torch SDPA"
  try "$VPY" -m pip install --quiet --no-build-isolation adam-atan2 ||
    info "adam-atan2 unavailable: the trainer uses its pure-PyTorch AdamATan2"
fi

# 7. Logins --------------------------------------------------------------------------------------
step "7/7 logins"
if [ -n "${WANDB_API_KEY:-}" ]; then
  # The key is read from the environment inside Python, so it is not on any command line.
  run "$VPY" -c 'import os, wandb; wandb.login(key=os.environ["WANDB_API_KEY"])'
else
  info "WANDB_API_KEY not set: runs log offline (wandb sync later, or set the key)"
fi
if [ -n "${HF_TOKEN:-}" ]; then
  info "HF_TOKEN set: Hub pushes and private downloads use it"
else
  info "HF_TOKEN not set: Hub pushes need --token or \`hf auth login\`"
fi

echo
echo "ready: cd $REPO_DIR && source $VENV_DIR/bin/activate"
if [ -n "$START_SCRIPT" ] && [ -x "$START_SCRIPT" ]; then
  info "handing over to $START_SCRIPT"
  if [ "$DRY_RUN" = 0 ]; then exec "$START_SCRIPT"; fi
fi
