{{/* Names, labels and image references shared by every template of the chart. */}}

{{- define "epd-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "epd-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "epd-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "epd-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "epd-operator.labels" -}}
{{ include "epd-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "epd-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "epd-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "epd-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "epd-operator.engineImage" -}}
{{- default (printf "epd-operator/epd-engine:%s" .Chart.AppVersion) .Values.engine.image -}}
{{- end -}}

{{- define "epd-operator.routerImage" -}}
{{- default (include "epd-operator.image" .) .Values.router.image -}}
{{- end -}}

{{/* The namespaced rules: exactly the calls reconcile/kube.py and kopf make. */}}
{{- define "epd-operator.namespacedRules" -}}
# kopf watches EPDClusters and keeps its finalizer and annotations on them.
- apiGroups: ["epd-operator.io"]
  resources: ["epdclusters"]
  verbs: ["list", "watch", "patch"]
# The operator server-side-applies the status.
- apiGroups: ["epd-operator.io"]
  resources: ["epdclusters/status"]
  verbs: ["patch"]
# Children: observed by label through a watch-fed cache (list + watch), server-side applied
# (a PATCH; the apiserver also checks "create" when the apply creates the object), pruned.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Workload children likewise; their changes also trigger a pass (status follows readiness).
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# One PodDisruptionBudget per engine role (roles.<role>.rollout.maxUnavailable).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Engine pods are only read: their status carries the transport preflight report
# (TransportReady). Never written.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Per-role scale targets (EPDRoleScaler): children like the above, watched so a `kubectl
# scale` / HPA write reaches the StatefulSet at once; the operator seeds or reverts their
# number through /scale (as HPA does) and writes their status.
- apiGroups: ["epd-operator.io"]
  resources: ["epdrolescalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["epd-operator.io"]
  resources: ["epdrolescalers/scale", "epdrolescalers/status"]
  verbs: ["patch"]
# Events on EPDClusters when a condition changes.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
