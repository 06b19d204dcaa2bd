# The README's two commands: `make demo` (main job end to end on bundled data, CPU-sized)
# and `make test` (full test suite). Both install what they need first.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0

.PHONY: install install-test demo test

# Keep an existing torch (GPU pods ship their own CUDA build); otherwise take the pinned CPU wheel.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e .

install-test:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e ".[test]"

demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PYTHON) demo.py

test: install-test
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q
