# The README's two commands: `make demo` (main job end to end on bundled data, CPU-sized)
# and `make test` (full test suite). Both install what they need first.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0

.PHONY: install install-test demo test

# Keep an existing torch (GPU pods ship their own CUDA build); otherwise the pinned version, the CPU
# build when there is no NVIDIA GPU (scripts/install_torch.sh says which it installs and why).
install:
	@bash scripts/install_torch.sh "$(PYTHON)" "$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e .

install-test:
	@bash scripts/install_torch.sh "$(PYTHON)" "$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e ".[test]"

demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PYTHON) demo.py

test: install-test
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q
