#!/usr/bin/env bash
# Set up everything STARK needs in ./.venv (idempotent; a re-run takes about a second).
#   scripts/setup.sh            python environment (torch chosen for this machine)
#   scripts/setup.sh --editor   also Neovim and the VS Code extension's node packages
#   scripts/setup.sh --tests    what `make test` needs: --editor, plus Triton on a machine
#                               without a GPU (its interpreter runs the Triton candidate's
#                               correctness test on CPU; a CUDA torch brings its own Triton),
#                               plus Ray (the `ray` extra: `stark batch --ray` tests, CPU-only)
#   scripts/setup.sh --print-torch-spec    print the torch requirement this machine gets, and exit
#   scripts/setup.sh --print-triton-spec   print the extra Triton requirement of --tests (may be
#                                          empty), and exit
# Environment overrides:
#   STARK_VENV=path             where the virtual environment lives (default .venv)
#   STARK_TORCH_SPEC=spec       force a torch requirement, e.g. "torch==2.13.0"
#   STARK_TORCH_INDEX=url       an extra index for torch wheels (CPU machines default to the
#                               PyTorch CPU index, so the +cpu build is found)
#   STARK_TRITON_SPEC=spec      force the Triton requirement of --tests ("" for none)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STARK_VENV:-.venv}
PY=${PYTHON:-python3}
WITH_EDITOR=0
WITH_TESTS=0
PRINT_SPEC=0
PRINT_TRITON_SPEC=0
for arg in "$@"; do
  case "$arg" in
    --editor) WITH_EDITOR=1 ;;
    --tests) WITH_EDITOR=1; WITH_TESTS=1 ;;
    --print-torch-spec) PRINT_SPEC=1 ;;
    --print-triton-spec) PRINT_TRITON_SPEC=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

has_nvidia_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'
}

torch_spec() {
  if [ -n "${STARK_TORCH_SPEC:-}" ]; then
    echo "$STARK_TORCH_SPEC"
  elif has_nvidia_gpu; then
    # PyPI's default Linux wheel is the CUDA build, with Triton.
    echo "torch"
  else
    # CPU-only machine: the CPU build, by its local version label. PyPI's plain 2.13.0 is the
    # CUDA build (gigabytes of NVIDIA wheels); the +cpu wheel comes from PyTorch's CPU index
    # (cpu_torch_index) or from a wheel directory pip is configured with.
    echo "torch==2.13.0+cpu"
  fi
}

# Where the +cpu wheel lives for everyone without a local copy.
CPU_TORCH_INDEX="https://download.pytorch.org/whl/cpu"
# What a CPU machine installs when the CPU build can't be reached at all: PyPI's CUDA build
# of the same release. It works on a CPU, only larger.
CPU_TORCH_FALLBACK="torch==2.13.0"

triton_spec() {
  if [ -n "${STARK_TRITON_SPEC+set}" ]; then
    echo "$STARK_TRITON_SPEC"
  elif has_nvidia_gpu; then
    echo ""  # the CUDA torch wheel depends on the Triton it was built with
  else
    echo "triton==3.9.0"
  fi
}

if [ "$PRINT_SPEC" = 1 ]; then
  torch_spec
  exit 0
fi
if [ "$PRINT_TRITON_SPEC" = 1 ]; then
  triton_spec
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  spec=$(torch_spec)
  extra=()
  if [ -n "${STARK_TORCH_INDEX:-}" ]; then
    extra=(--extra-index-url "$STARK_TORCH_INDEX")
  elif [ "$spec" = "torch==2.13.0+cpu" ]; then
    extra=(--extra-index-url "$CPU_TORCH_INDEX")
  fi
  log "installing $spec"
  if ! "${PIP[@]}" install --retries 1 --timeout 30 "${extra[@]}" "$spec"; then
    if [ "$spec" = "torch==2.13.0+cpu" ] && [ -z "${STARK_TORCH_SPEC:-}" ]; then
      log "the CPU build of torch is not reachable (no $CPU_TORCH_INDEX, no local wheel);"
      log "installing $CPU_TORCH_FALLBACK from PyPI instead: the CUDA build, several GB, works on CPU"
      "${PIP[@]}" install "$CPU_TORCH_FALLBACK"
    else
      exit 1
    fi
  fi
fi

stamp="$VENV/.stark-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing stark (editable) with dev tools"
  "${PIP[@]}" install -e ".[dev]"
  rm -f "$VENV"/.stark-installed-*
  touch "$stamp"
fi

if [ "$WITH_TESTS" = 1 ]; then
  spec=$(triton_spec)
  if [ -n "$spec" ] && ! "$VENV/bin/python" -c 'import triton' >/dev/null 2>&1; then
    log "installing $spec (for the Triton interpreter tests)"
    "${PIP[@]}" install "$spec" || log "could not install $spec; the Triton interpreter tests will be skipped"
  fi
  if ! "$VENV/bin/python" -c 'import ray' >/dev/null 2>&1; then
    log "installing the ray extra (for the stark batch --ray tests)"
    "${PIP[@]}" install -e ".[ray]" || log "could not install ray; the Ray tests will be skipped"
  fi
fi

if [ "$WITH_EDITOR" = 1 ]; then
  if ! command -v nvim >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing neovim (Debian package)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq neovim) >/dev/null \
        || log "could not install neovim; its smoke test will be skipped"
    else
      log "neovim missing and cannot apt-get here; its smoke test will be skipped"
    fi
  fi
  if [ -f vscode-extension/package-lock.json ] && command -v npm >/dev/null 2>&1; then
    if [ ! -d vscode-extension/node_modules ] || [ vscode-extension/package-lock.json -nt vscode-extension/node_modules/.package-lock.json ]; then
      log "installing the VS Code extension's node packages"
      (cd vscode-extension && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
fi
log "ready: $VENV"
