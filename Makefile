# Quick start: `make run` (install, ingest the bundled sample photos, organise them, print stats), then `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FACE_PIPELINE_HOME ?= $(CURDIR)/.face_pipeline
export ORT_DISABLE_TELEMETRY := 1
export DAGSTER_DISABLE_TELEMETRY := 1
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: install run dev test bench clean-home faces-stats faces-ingest faces-export faces-cluster-dual \
	faces-clusters faces-persons faces-label-cluster faces-evaluate faces-train-matching faces-reassign

install: $(STAMP)

# torch first, pinned to the local CPU build: anything unpinned would pull gigabytes of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip check
	touch $(STAMP)

run: install
	$(BIN)/face-pipeline init
	$(BIN)/face-pipeline ingest "$$($(BIN)/face-pipeline samples)" --batch samples
	$(BIN)/face-pipeline cluster
	@echo ""
	@echo "Open the Dagster UI with:  make dev    (then http://$(HOST):$(PORT))"

# --- web: the people page and HTTP API (face-pipeline serve; WEB_HOST / WEB_PORT override 127.0.0.1:8800) ---
.PHONY: serve
serve: install
	$(BIN)/face-pipeline serve $(if $(WEB_HOST),--host $(WEB_HOST)) $(if $(WEB_PORT),--port $(WEB_PORT))
# --- end web ---

dev: install
	$(BIN)/face-pipeline init
	DAGSTER_HOME=$(FACE_PIPELINE_HOME)/dagster_home PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dg dev -h $(HOST) -p $(PORT)

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/train.py

faces-stats: install
	$(BIN)/face-pipeline stats

faces-ingest: install
	$(BIN)/face-pipeline ingest $(PHOTOS)

faces-export: install
	$(BIN)/face-pipeline export --out $(or $(OUT),faces.parquet)

# The seed's dual-mode clustering: known people assigned, unknown faces clustered.
faces-cluster-dual: install
	$(BIN)/face-pipeline cluster $(if $(PERSON_THRESHOLD),--person-threshold $(PERSON_THRESHOLD)) \
		$(if $(UNKNOWN_METHOD),--unknown-method $(UNKNOWN_METHOD)) $(if $(UNKNOWN_MIN_SIZE),--unknown-min-size $(UNKNOWN_MIN_SIZE))

faces-clusters: install
	$(BIN)/face-pipeline clusters

faces-persons: install
	$(BIN)/face-pipeline persons

faces-label-cluster: install
	$(BIN)/face-pipeline label-cluster $(CLUSTER) "$(NAME)"

faces-evaluate: install
	$(BIN)/face-pipeline evaluate $(or $(LABELLED_DIR),../shared/data/faces_dev)

faces-train-matching: install
	$(BIN)/face-pipeline train $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(MARGIN),--margin $(MARGIN))

faces-reassign: install
	$(BIN)/face-pipeline reassign $(if $(PERSON_THRESHOLD),--person-threshold $(PERSON_THRESHOLD)) $(if $(USE_TRAINED),--use-trained-model)

clean-home:
	rm -rf $(FACE_PIPELINE_HOME)
