"""The EPDCluster spec: model and image, roles, transfers, the shared encoder cache, the
router, and the root `EPDClusterSpec` (its rules: api.rules)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from epd_connector.launch.config import Device
from epd_connector.launch.drain import DEFAULT_DRAIN_SECONDS
from epd_connector.launch.router_options import CONSUMER_MEDIA_MODES, ENCODER_ROUTING, RouterOptions
from epd_connector.launch.rules import (
    DEFAULT_EC_PORT,
    DEFAULT_KV_BOOTSTRAP_PORT,
    DEFAULT_NIXL_SIDE_CHANNEL_PORT,
    DEFAULT_STORE_LOCAL_BUFFER_BYTES,
    DEFAULT_STORE_MASTER_PORT,
    DEFAULT_STORE_METRICS_PORT,
    DEFAULT_STORE_SEGMENT_BYTES,
    NO_CONTROL_PATTERN,
)

from .base import (
    _DNS_SUBDOMAIN,
    _EXTENDED_RESOURCE,
    ABS_PATH,
    ArgText,
    FreeForm,
    Port,
    Quantity,
    _default_of,
    _Model,
)
from .cel import CelRule
from .constants import (
    DEFAULT_RDMA_RESOURCE,
    ENGINE_HTTP_PORT,
    MAX_ROLE_REPLICAS,
    ReplicasFrom,
    RoleName,
)
from .imageref import REFERENCE_PATTERN, REPOSITORY_PATTERN, TAG_PATTERN
from .k8s import (
    EnvVar,
    ResourceRequirements,
    Toleration,
    Volume,
    VolumeMount,
)
from .rules import (
    ROLE_SCALING_RULES,
    SHARED_CACHE_RULES,
    SPEC_RULES,
    SPEC_SCALING_RULES,
)

# --------------------------------------------------------------------------- model and image


class PVCSource(_Model):
    """Weights on a PersistentVolumeClaim, mounted read-only into every engine pod."""

    claim_name: str = Field(
        min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN, description="PVC name."
    )
    sub_path: str | None = Field(
        default=None,
        max_length=4096,
        description="Directory inside the claim that holds the weights (config.json, ...).",
    )


class HostPathSource(_Model):
    """Weights in a directory on every node (pre-loaded), mounted read-only."""

    path: str = Field(
        min_length=1, max_length=4096, pattern=ABS_PATH, description="Absolute node path."
    )


class ImageSource(_Model):
    """Weights baked into the engine image."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        pattern=ABS_PATH,
        description="Absolute directory inside the engine image that holds the weights.",
    )


class ModelSource(_Model):
    """Where the weights come from: exactly one of pvc, hostPath or image. Leave the whole
    `source` out to let vLLM download `name` from the model hub into a per-pod cache."""

    __cel__ = (
        CelRule(
            rule="[has(self.pvc), has(self.hostPath), has(self.image)].filter(x, x).size() == 1",
            message="model.source: set exactly one of pvc, hostPath, image",
            check=lambda s: sum(x is not None for x in (s.pvc, s.host_path, s.image)) == 1,
        ),
    )
    pvc: PVCSource | None = Field(default=None, description="Weights on a PVC.")
    host_path: HostPathSource | None = Field(default=None, description="Weights on the node.")
    image: ImageSource | None = Field(default=None, description="Weights inside the image.")


class ModelSpec(_Model):
    """The model every role serves."""

    name: str = Field(
        min_length=1,
        max_length=512,
        pattern=NO_CONTROL_PATTERN,
        description="Model hub id (e.g. Qwen/Qwen3-VL-8B-Instruct) or a name for local weights; "
        "it is the served model name unless servedModelName is set.",
    )
    revision: str | None = Field(
        default=None,
        max_length=256,
        pattern=NO_CONTROL_PATTERN,
        description="Hub revision (branch, tag or commit).",
    )
    served_model_name: str | None = Field(
        default=None,
        max_length=512,
        pattern=NO_CONTROL_PATTERN,
        description="Model name clients use; defaults to name.",
    )
    tokenizer: str | None = Field(
        default=None,
        max_length=4096,
        pattern=NO_CONTROL_PATTERN,
        description="Tokenizer hub id or path, if not the model's.",
    )
    source: ModelSource | None = Field(
        default=None,
        description="Where the weights come from; absent means download `name` from the hub.",
    )


class ImageSpec(_Model):
    """The engine image of the encoder / prefill / decode pods. Defaults to the operator's
    configured engine image; set `ref`, or `repository` and/or `tag`."""

    __cel__ = (
        CelRule(
            rule="!has(self.ref) || (!has(self.repository) && !has(self.tag))",
            message="image: set either ref or repository/tag, not both",
            check=lambda i: i.ref is None or (i.repository is None and i.tag is None),
            field_path=".ref",
        ),
    )
    ref: str | None = Field(
        default=None,
        max_length=1024,
        pattern=REFERENCE_PATTERN,
        description="Full image reference ([registry/]repository[:tag][@digest]).",
    )
    repository: str | None = Field(
        default=None,
        max_length=1024,
        pattern=REPOSITORY_PATTERN,
        description="Image repository; default: operator's.",
    )
    tag: str | None = Field(
        default=None,
        max_length=128,
        pattern=TAG_PATTERN,
        description="Image tag; with no repository it retags the operator's default image.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy; default: the operator's."
    )
    pull_secrets: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=16, description="Names of image pull Secrets in the namespace."
    )


class RatioBound(_Model):
    """Bounds on replicas(role) / replicas(per). The operator adjusts `role` (never `per`) to
    the nearest count inside the bounds, then applies the role's own min/maxReplicas, which
    win when the two cannot both hold."""

    __cel__ = (
        CelRule(
            rule="self.role != self.per",
            message="scaling.ratios: role and per must name two different roles",
            check=lambda b: b.role != b.per,
            field_path=".per",
        ),
        CelRule(
            rule="has(self.min) || has(self.max)",
            message="scaling.ratios: set min, max or both",
            check=lambda b: b.min is not None or b.max is not None,
        ),
        CelRule(
            rule="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="scaling.ratios: min must not exceed max",
            check=lambda b: b.min is None or b.max is None or b.min <= b.max,
            field_path=".min",
        ),
    )
    role: RoleName = Field(description="The role whose pod count is bounded (and adjusted).")
    per: RoleName = Field(description="The role it is counted against (never adjusted).")
    min: float | None = Field(
        default=None, ge=0, le=1024, description="Lowest replicas(role) / replicas(per)."
    )
    max: float | None = Field(
        default=None, gt=0, le=1024, description="Highest replicas(role) / replicas(per)."
    )


class ScalingSpec(_Model):
    """Bounds across roles, applied to every role's pod count whoever owns it."""

    __cel__ = (
        CelRule(
            # A ratio of a role to itself is refused by RatioBound's own rule, at its path.
            rule="self.ratios.all(r, r.role == r.per || ("
            "self.ratios.filter(s, s.role == r.role).size() == 1 && "
            "!self.ratios.exists(s, s.per == r.role && s.role != s.per)))",
            message="scaling.ratios: a role is bounded by at most one ratio and is then not "
            "the `per` of another (the bounds are applied in one pass)",
            check=lambda s: all(
                r.role == r.per
                or (
                    sum(x.role == r.role for x in s.ratios) == 1
                    and not any(x.per == r.role and x.role != x.per for x in s.ratios)
                )
                for r in s.ratios
            ),
            field_path=".ratios",
        ),
    )
    ratios: list[RatioBound] = Field(
        default_factory=list,
        max_length=3,
        description="Ratio bounds between roles, e.g. {role: encoder, per: decode, min: 0.25, "
        "max: 1}: between one encoder per four decode pods and one per decode pod.",
    )


# --------------------------------------------------------------------------- roles


class Parallelism(_Model):
    """vLLM parallelism of one pod. The pod requests tensor x pipeline x data GPUs."""

    tensor: int = Field(default=1, ge=1, le=64, description="--tensor-parallel-size.")
    pipeline: int = Field(default=1, ge=1, le=64, description="--pipeline-parallel-size.")
    data: int = Field(
        default=1, ge=1, le=64, description="--data-parallel-size (ranks inside the pod)."
    )

    @property
    def gpus(self) -> int:
        return self.tensor * self.pipeline * self.data


class RoleRolloutSpec(_Model):
    """How a role's pods move to a new revision, step by step (docs/rollouts.md)."""

    max_unavailable: int = Field(
        default=1,
        ge=1,
        le=MAX_ROLE_REPLICAS,
        description="Pods of the role that may be down at once: replaced together in one "
        "rollout step, and the role's PodDisruptionBudget for voluntary disruptions (node "
        "drains).",
    )
    drain_seconds: int = Field(
        default=DEFAULT_DRAIN_SECONDS,
        ge=0,
        le=3600,
        description="Longest wait of a terminating pod for its requests (and their EC pushes "
        "and KV pulls) to finish before vLLM gets SIGTERM; it has left the Services and the "
        "router's rotation first. The pod's grace period grows by as much. 0: no drain.",
    )


class RoleSpec(_Model):
    """One role's StatefulSet of vLLM engine pods."""

    __cel__ = ROLE_SCALING_RULES
    # A role with no pods cannot serve: 0 is refused (delete the EPDCluster to stop it).
    replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_ROLE_REPLICAS,
        description="Number of pods (at least 1: every role present is needed to serve). With "
        "replicasFrom: Scaler only the initial value of the role's EPDRoleScaler.",
    )
    replicas_from: ReplicasFrom = Field(
        default="Spec",
        description="Who owns the number of pods: Spec (default: `replicas` above, so GitOps "
        "owns it; a `kubectl scale` of the role's EPDRoleScaler is reverted) or Scaler (the "
        "role's EPDRoleScaler <cluster>-<role>, driven by `kubectl scale`, HPA or KEDA "
        "through its /scale subresource; `replicas` then only seeds it). Switching never "
        "restarts pods.",
    )
    min_replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROLE_REPLICAS,
        description="Lower bound the operator clamps the role's pod count to (either source).",
    )
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROLE_REPLICAS,
        description="Upper bound the operator clamps the role's pod count to (either source).",
    )
    parallelism: Parallelism = Field(
        default_factory=Parallelism,
        json_schema_extra=_default_of(Parallelism),
        description="Tensor / pipeline / data parallelism per pod.",
    )
    port: Port = Field(
        default=ENGINE_HTTP_PORT,
        description="vLLM's HTTP port in this role's pods (`--port`; container port, Service "
        "port and probes). Roles may differ, e.g. when engines share a host network.",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="CPU / memory of the engine container. GPUs (nvidia.com/gpu = tensor x "
        "pipeline x data, with device cuda) and the RDMA resource are added by the operator; "
        "do not set them.",
    )
    max_model_len: int | None = Field(default=None, gt=0, description="--max-model-len.")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="--gpu-memory-utilization (0 < x <= 1)."
    )
    extra_args: list[Annotated[ArgText, Field(max_length=4096)]] | None = Field(
        default=None,
        max_length=64,
        description="Extra `vllm serve` arguments, appended last. Flags the operator sets "
        "(ports, parallelism, transfer configs, ...), their abbreviations and aliases, and "
        "flags vLLM 0.33 does not know are rejected.",
    )
    env: list[EnvVar] | None = Field(
        default=None, max_length=128, description="Extra environment variables of the engine."
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Pod nodeSelector.")
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Pod tolerations."
    )
    affinity: FreeForm | None = Field(default=None, description="Pod affinity, as in a Pod spec.")
    pod_labels: dict[str, str] | None = Field(default=None, description="Extra pod labels.")
    pod_annotations: dict[str, str] | None = Field(
        default=None, description="Extra pod annotations."
    )
    volumes: list[Volume] | None = Field(
        default=None, max_length=64, description="Extra pod volumes."
    )
    volume_mounts: list[VolumeMount] | None = Field(
        default=None, max_length=64, description="Mounts of `volumes` into the engine container."
    )
    rollout: RoleRolloutSpec = Field(
        default_factory=RoleRolloutSpec,
        json_schema_extra=_default_of(RoleRolloutSpec),
        description="Per-step bound of the coordinated rollout (maxUnavailable).",
    )


class Roles(_Model):
    """The roles present define the topology: encoder + decode = E/PD (decode runs prefill and
    decode and receives the encoder outputs); encoder + prefill + decode = E/P/D."""

    encoder: RoleSpec = Field(
        description="Encoder pods (EC producers, vLLM encoder-only mode; no KV cache)."
    )
    prefill: RoleSpec | None = Field(
        default=None, description="Prefill pods (E/P/D): EC consumers and KV producers."
    )
    decode: RoleSpec = Field(
        description="Decode pods: prefill+decode EC consumers in E/PD, KV consumers in E/P/D."
    )


# --------------------------------------------------------------------------- transfer


class SharedStorage(_Model):
    """A ReadWriteMany volume the ECExampleConnector writes encoder outputs to."""

    claim_name: str = Field(
        min_length=1, max_length=253, pattern=_DNS_SUBDOMAIN, description="RWX PVC name."
    )
    path: str = Field(
        default="/ec-cache",
        min_length=2,
        max_length=4096,
        pattern=ABS_PATH,
        description="Mount path in the encoder and EC consumer pods (shared_storage_path).",
    )


class ECTransferSpec(_Model):
    """How encoder outputs move from the encoder to the EC consumer (vLLM --ec-transfer-config)."""

    __cel__ = (
        CelRule(
            rule="self.connector != 'ECExampleConnector' || has(self.sharedStorage)",
            message="ecTransfer.connector ECExampleConnector needs ecTransfer.sharedStorage "
            "(a ReadWriteMany claim)",
            check=lambda e: e.connector != "ECExampleConnector" or e.shared_storage is not None,
            field_path=".sharedStorage",
        ),
        CelRule(
            rule="!has(self.sharedStorage) || self.connector == 'ECExampleConnector'",
            message="ecTransfer.sharedStorage is only used by ECExampleConnector",
            check=lambda e: e.shared_storage is None or e.connector == "ECExampleConnector",
            field_path=".sharedStorage",
        ),
        CelRule(
            rule="self.connector == 'ECMooncakeConnector' || !has(self.controlTimeoutSeconds)",
            message="ecTransfer.controlTimeoutSeconds is only read by ECMooncakeConnector",
            check=lambda e: (
                e.connector == "ECMooncakeConnector" or e.control_timeout_seconds is None
            ),
            field_path=".controlTimeoutSeconds",
        ),
        CelRule(
            rule="self.connector == 'ECMooncakeConnector' || !has(self.pushWaitTimeoutSeconds)",
            message="ecTransfer.pushWaitTimeoutSeconds is only read by ECMooncakeConnector",
            check=lambda e: (
                e.connector == "ECMooncakeConnector" or e.push_wait_timeout_seconds is None
            ),
            field_path=".pushWaitTimeoutSeconds",
        ),
    )
    connector: Literal["ECMooncakeConnector", "ECExampleConnector"] = Field(
        default="ECMooncakeConnector",
        description="ECMooncakeConnector (RDMA/TCP push, default) or ECExampleConnector "
        "(safetensors files on a shared volume, for simple setups).",
    )
    protocol: Literal["rdma", "tcp"] | None = Field(
        default=None,
        description="Mooncake transport (mooncake_protocol); default rdma when rdma.enabled, "
        "else tcp.",
    )
    buffer_size: Quantity = Field(
        default="1G",
        description="ec_buffer_size: the registered transfer slab per pod, in bytes or as a "
        "quantity (e.g. 4Gi). Size it for the peak in-flight encoder outputs.",
    )
    control_port: Port = Field(
        default=DEFAULT_EC_PORT,
        description="ec_port: base EC control port. The EC consumer's DP rank d, TP rank r "
        "listens on controlPort + d*tensor + r.",
    )
    encoder_role: Literal["ec_producer", "ec_both"] = Field(
        default="ec_producer",
        description="ec_role of the encoder: ec_producer (encoder-only) or ec_both.",
    )
    control_timeout_seconds: float | None = Field(
        default=None, gt=0, description="control_timeout_s (vLLM default 30)."
    )
    push_wait_timeout_seconds: float | None = Field(
        default=None, gt=0, description="push_wait_timeout_s (vLLM default 60)."
    )
    extra_config: FreeForm | None = Field(
        default=None,
        description="Merged into ec_connector_extra_config; keys the operator derives "
        "(mooncake_protocol, control_timeout_s, push_wait_timeout_s, shared_storage_path) are "
        "rejected.",
    )
    shared_storage: SharedStorage | None = Field(
        default=None, description="ECExampleConnector only: the shared ReadWriteMany volume."
    )


class KVTransferSpec(_Model):
    """How prefill KV caches reach decode pods in E/P/D (vLLM --kv-transfer-config)."""

    __cel__ = (
        CelRule(
            rule="!has(self.protocol) || self.connector == 'MooncakeConnector'",
            message="kvTransfer.protocol applies to MooncakeConnector only (NixlConnector picks "
            "its backend through extraConfig.backends)",
            check=lambda k: k.protocol is None or k.connector == "MooncakeConnector",
            field_path=".protocol",
        ),
    )
    connector: Literal["MooncakeConnector", "NixlConnector"] = Field(
        default="MooncakeConnector",
        description="MooncakeConnector (same transport stack as the EC connector, default) or "
        "NixlConnector.",
    )
    protocol: Literal["rdma", "tcp"] | None = Field(
        default=None,
        description="MooncakeConnector transport; default: the EC transfer's protocol.",
    )
    bootstrap_port: Port = Field(
        default=DEFAULT_KV_BOOTSTRAP_PORT,
        description="MooncakeConnector bootstrap server port on prefill pods "
        "(VLLM_MOONCAKE_BOOTSTRAP_PORT).",
    )
    side_channel_port: Port = Field(
        default=DEFAULT_NIXL_SIDE_CHANNEL_PORT,
        description="NixlConnector handshake port (VLLM_NIXL_SIDE_CHANNEL_PORT); DP rank d "
        "listens on sideChannelPort + d.",
    )
    extra_config: FreeForm | None = Field(
        default=None, description="Merged into kv_connector_extra_config."
    )


class RDMASpec(_Model):
    """RDMA devices for the transfer engines, from a device plugin. Enabling it adds the
    resource to every engine pod's requests/limits and the IPC_LOCK capability (to pin memory
    for registration); nothing privileged."""

    __cel__ = (
        CelRule(
            rule="!self.enabled || self.count >= 1",
            message="rdma.count must be at least 1 when rdma.enabled is true",
            check=lambda r: not r.enabled or r.count >= 1,
            field_path=".count",
        ),
    )
    enabled: bool = Field(default=False, description="Request RDMA devices for engine pods.")
    resource_name: str = Field(
        default=DEFAULT_RDMA_RESOURCE,
        max_length=253,
        pattern=_EXTENDED_RESOURCE,
        description="Device-plugin resource name (domain/name).",
    )
    count: int = Field(default=1, ge=0, le=64, description="Devices requested per pod.")


# --------------------------------------------------------------------------- shared cache


class StoreMasterSpec(_Model):
    """The `mooncake_master` Deployment (one replica) and Service the operator runs for the
    shared encoder cache. It holds only the key -> segment index: the cached bytes live in the
    encoders' segments. A restarted master starts empty (encoders keep serving and encode
    again until the cache refills)."""

    __cel__ = (
        CelRule(
            rule="self.port != self.metricsPort",
            message="encoderCache.shared.master.metricsPort must differ from port",
            check=lambda m: m.port != m.metrics_port,
            field_path=".metricsPort",
        ),
    )
    port: Port = Field(
        default=DEFAULT_STORE_MASTER_PORT, description="RPC port of the master (--rpc_port)."
    )
    metrics_port: Port = Field(
        default=DEFAULT_STORE_METRICS_PORT,
        description="HTTP port of the master's /health (probes) and /metrics (--metrics_port).",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Master container resources; default requests cpu 250m, memory 256Mi.",
    )
    eviction_high_watermark_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Pool fill ratio that starts eviction (--eviction_high_watermark_ratio; "
        "Mooncake's default 0.9).",
    )
    eviction_ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Share of objects evicted when the pool is full (--eviction_ratio; "
        "Mooncake's default 0.05).",
    )


class SharedEncoderCacheSpec(_Model):
    """vLLM 0.33's cross_encoder_cache: encode-only encoders look every image up in a Mooncake
    Store before encoding it and publish what they encode. Embedded mode: each encoder pod
    pins segmentSize + localBufferSize + the Store client's 128 MiB read buffer of host
    memory, which the operator adds to the encoder's memory request (and limit, if set)."""

    enabled: bool = Field(default=False, description="Run the shared encoder cache.")
    segment_size: Quantity = Field(
        default=f"{DEFAULT_STORE_SEGMENT_BYTES >> 30}Gi",
        description="Host memory each encoder contributes to the cache (global_segment_size), "
        "e.g. 8Gi; the cache holds encoders x segmentSize.",
    )
    local_buffer_size: Quantity = Field(
        default=f"{DEFAULT_STORE_LOCAL_BUFFER_BYTES >> 30}Gi",
        description="Per-encoder staging buffer of the Store client (local_buffer_size).",
    )
    master: StoreMasterSpec = Field(
        default_factory=StoreMasterSpec,
        json_schema_extra=_default_of(StoreMasterSpec),
        description="The mooncake_master the operator runs.",
    )


class EncoderCacheSpec(_Model):
    """Encoder compute / cache budgets (vLLM 0.33 flags), applied to the encoder and the EC
    consumer alike so multimodal identifiers and budgets match."""

    max_num_batched_tokens: int | None = Field(
        default=None,
        gt=0,
        description="--max-num-batched-tokens; the encoder compute and cache budgets derive "
        "from it.",
    )
    mm_processor_cache_gb: float | None = Field(
        default=None, ge=0, description="--mm-processor-cache-gb (0 disables)."
    )
    limit_mm_per_prompt: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="--limit-mm-per-prompt, e.g. {image: 4, video: 0}."
    )
    mm_encoder_tp_mode: Literal["weights", "data"] | None = Field(
        default=None, description="--mm-encoder-tp-mode."
    )
    shared: SharedEncoderCacheSpec | None = Field(
        default=None,
        description="A cluster-wide encoder cache shared by every encoder (a Mooncake Store "
        "run by the operator): an image encoded once by any encoder is reused by all.",
    )


class _VLLMKwargs(BaseModel):
    """Keyword arguments vLLM hands on as is: vLLM's own snake_case keys (no camelCase
    aliases), the ones whose type vLLM 0.33 fixes typed, any other key passed through."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)


class ImageIOKwargs(_VLLMKwargs):
    """--media-io-kwargs.image (vLLM 0.33 multimodal/media/image.py::ImageMediaIO)."""

    image_mode: str | None = Field(default=None, description="PIL mode images convert to.")
    rgba_background_color: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(
        default=None, min_length=3, max_length=3, description="Background for RGBA images."
    )


class VideoIOKwargs(_VLLMKwargs):
    """--media-io-kwargs.video (vLLM 0.33 multimodal/media/video.py::VideoMediaIO)."""

    num_frames: int | None = Field(
        default=None, ge=-1, description="Frames sampled per video (-1: all; 0 is refused)."
    )
    fps: float | None = Field(default=None, description="Frames per second sampled (> 0 or -1).")
    backend: str | None = Field(default=None, description="Video decoding backend.")

    @model_validator(mode="after")
    def _check(self) -> VideoIOKwargs:
        if self.num_frames == 0:
            raise ValueError("num_frames must be greater than 0 or -1 (vLLM 0.33)")
        if self.fps is not None and not (self.fps > 0 or self.fps == -1):
            raise ValueError("fps must be greater than 0 or -1")
        return self


class AudioIOKwargs(_VLLMKwargs):
    """--media-io-kwargs.audio (vLLM 0.33 multimodal/media/audio.py::AudioMediaIO)."""

    audio_backend: str | None = Field(default=None, description="Audio decoding backend.")


class MediaIOKwargs(BaseModel):
    """--media-io-kwargs: vLLM 0.33's type is dict[modality, dict[str, Any]]; a key that is not
    a modality, or a modality that is not an object, makes vLLM refuse to start."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    image: ImageIOKwargs | None = Field(default=None, description="Image loading options.")
    video: VideoIOKwargs | None = Field(default=None, description="Video loading options.")
    audio: AudioIOKwargs | None = Field(default=None, description="Audio loading options.")


class MMProcessorKwargs(_VLLMKwargs):
    """--mm-processor-kwargs: overrides for the model's Hugging Face processor."""

    min_pixels: int | None = Field(default=None, ge=1, description="Smallest image area.")
    max_pixels: int | None = Field(default=None, ge=1, description="Largest image area.")

    @model_validator(mode="after")
    def _check(self) -> MMProcessorKwargs:
        if (
            self.min_pixels is not None
            and self.max_pixels is not None
            and self.min_pixels > self.max_pixels
        ):
            raise ValueError("min_pixels must not exceed max_pixels")
        return self


_ROUTER = RouterOptions()  # the router's own defaults: one definition, in the connector


class RouterOverload(_Model):
    """How the router treats busy, slow and failing engine pods (Envoy's habits)."""

    health_timeout_seconds: float = Field(
        default=_ROUTER.health_timeout_s,
        gt=0,
        le=60,
        description="Timeout of one active health check (GET /health) of an engine pod; a busy "
        "engine answers late but is alive.",
    )
    unhealthy_threshold: int = Field(
        default=_ROUTER.unhealthy_threshold,
        ge=1,
        le=100,
        description="Timed-out health checks in a row before a pod leaves rotation (a refused "
        "connection or a non-200 answer takes it out at once).",
    )
    eject_after_failures: int = Field(
        default=_ROUTER.eject_after_failures,
        ge=1,
        le=1000,
        description="Failed requests in a row (5xx, timeout, broken connection) that eject a pod "
        "from rotation (passive outlier detection).",
    )
    base_ejection_seconds: float = Field(
        default=_ROUTER.base_ejection_s,
        gt=0,
        le=3600,
        description="An ejected pod stays out this long times the number of its ejections.",
    )
    max_ejection_seconds: float = Field(
        default=_ROUTER.max_ejection_s, gt=0, le=3600, description="The longest ejection."
    )
    max_ejection_percent: int = Field(
        default=_ROUTER.max_ejection_percent,
        ge=0,
        le=100,
        description="Most pods of a role ejected at once, in percent (one pod always may be).",
    )
    panic_threshold_percent: int = Field(
        default=_ROUTER.panic_threshold_percent,
        ge=0,
        le=100,
        description="Below this share of a role's pods in rotation, the router routes to every "
        "pod of the role that still accepts connections.",
    )
    max_inflight_per_pod: int = Field(
        default=_ROUTER.max_inflight_per_pod,
        ge=0,
        le=1_000_000,
        description="Requests one engine pod gets at once before new ones queue (0: no limit).",
    )
    queue_size: int = Field(
        default=_ROUTER.queue_size,
        ge=0,
        le=1_000_000,
        description="Most requests waiting for a pod, per router pod; more get HTTP 503.",
    )
    queue_timeout_seconds: float = Field(
        default=_ROUTER.queue_timeout_s,
        ge=0,
        le=600,
        description="Longest wait for a pod before HTTP 503 naming the stage.",
    )


class RouterSpec(_Model):
    """The epd-router Deployment and Service, the cluster's OpenAI-compatible front door."""

    replicas: int = Field(
        default=1, ge=1, le=64, description="Router pods (at least 1: the only way in)."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Type of the router Service."
    )
    port: Port = Field(default=8000, description="Router Service port.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Router container resources."
    )
    consumer_media: Literal[CONSUMER_MEDIA_MODES] = Field(  # type: ignore[valid-type]
        default=_ROUTER.consumer_media,
        description="How media reach the EC consumer after encoding. reference: a metadata-only "
        "embeds item named by the encoder's identifier, so the consumer never decodes or "
        "preprocesses the pixels (vLLM accepts it on EC and KV consumers; a model or modality "
        "whose encoder reports no placeholder metadata falls back to raw per item, and a request "
        "with audio as a whole). raw: the original item; every consumer preprocesses it again.",
    )
    encoder_routing: Literal[ENCODER_ROUTING] = Field(  # type: ignore[valid-type]
        default=_ROUTER.encoder_routing,
        description="How a media item picks its encoder. affinity: by a hash of its content "
        "under a load bound, so repeats reach the encoder that has them cached. round-robin.",
    )
    overload: RouterOverload = Field(
        default_factory=RouterOverload,
        description="Health checks, outlier ejection, panic routing and queueing.",
    )


class CPUSpec(_Model):
    """Settings of vLLM's CPU backend (device: cpu)."""

    kv_cache_space_gib: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        alias="kvCacheSpaceGiB",
        description="Host memory for the KV cache per engine, in GiB "
        "(VLLM_CPU_KVCACHE_SPACE); default: vLLM's.",
    )


class EPDClusterSpec(_Model):
    """Desired state of an EPD (encoder / prefill / decode) disaggregated vLLM cluster."""

    __cel__ = SPEC_RULES + SPEC_SCALING_RULES + SHARED_CACHE_RULES
    model: ModelSpec = Field(description="The model every role serves.")
    device: Device = Field(
        default="cuda",
        description="Where the engines compute: cuda (NVIDIA GPUs, the default; pods request "
        "nvidia.com/gpu) or cpu (vLLM's CPU backend and a CPU build of the engine image: no "
        "GPU is requested and EC/KV transfer buffers live in host memory; for small models, "
        "demos and tests).",
    )
    cpu: CPUSpec | None = Field(default=None, description="CPU backend settings (device: cpu).")
    image: ImageSpec | None = Field(
        default=None, description="Engine image; default: the operator's engine image."
    )
    roles: Roles = Field(description="The engine roles; their presence defines the topology.")
    paused: bool = Field(
        default=False,
        description="Stop rollouts where they are: no further pod moves to a new revision "
        "and spec changes to pod templates wait (scaling still applies). false resumes.",
    )
    ec_transfer: ECTransferSpec = Field(
        default_factory=ECTransferSpec,
        json_schema_extra=_default_of(ECTransferSpec),
        description="Encoder-output transfer (vLLM EC connector) settings.",
    )
    kv_transfer: KVTransferSpec | None = Field(
        default=None,
        description="Prefill-to-decode KV transfer (E/P/D only); default MooncakeConnector.",
    )
    rdma: RDMASpec = Field(
        default_factory=RDMASpec,
        json_schema_extra=_default_of(RDMASpec),
        description="RDMA device resources.",
    )
    encoder_cache: EncoderCacheSpec = Field(
        default_factory=EncoderCacheSpec,
        json_schema_extra=_default_of(EncoderCacheSpec),
        description="Encoder compute / cache budgets.",
    )
    media_io_kwargs: MediaIOKwargs | None = Field(
        default=None,
        description="--media-io-kwargs (keyed by modality), identical on the encoder and the "
        "EC consumer (they must compute the same multimodal identifiers).",
    )
    mm_processor_kwargs: MMProcessorKwargs | None = Field(
        default=None,
        description="--mm-processor-kwargs, identical on every role; the keys depend on the "
        "model's processor (min_pixels / max_pixels are typed, the rest passes through).",
    )
    router: RouterSpec = Field(
        default_factory=RouterSpec,
        json_schema_extra=_default_of(RouterSpec),
        description="The EPD router.",
    )
    scaling: ScalingSpec | None = Field(
        default=None,
        description="Bounds across roles (ratios); per-role bounds are roles.<role>."
        "minReplicas/maxReplicas.",
    )

    @property
    def topology(self) -> Literal["E/PD", "E/P/D"]:
        return "E/P/D" if self.roles.prefill is not None else "E/PD"

    @property
    def ec_protocol(self) -> Literal["rdma", "tcp"]:
        """The EC transport in effect (the default follows rdma.enabled)."""
        if self.ec_transfer.protocol is not None:
            return self.ec_transfer.protocol
        return "rdma" if self.rdma.enabled else "tcp"

    @property
    def kv_protocol(self) -> Literal["rdma", "tcp"]:
        if self.kv_transfer is not None and self.kv_transfer.protocol is not None:
            return self.kv_transfer.protocol
        return self.ec_protocol
