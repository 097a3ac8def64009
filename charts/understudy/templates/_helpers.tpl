{{/* Names, labels and the rules shared by the Roles and ClusterRoles. */}}

{{- define "understudy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "understudy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "understudy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "understudy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "understudy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "understudy.labels" -}}
helm.sh/chart: {{ include "understudy.chart" . }}
{{ include "understudy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: understudy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "understudy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "understudy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "understudy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "understudy.leaseName" -}}
{{- default (printf "%s-leader" (include "understudy.fullname" .)) .Values.leaderElection.leaseName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
What the operator does to the objects of a watched namespace, derived from its API calls:
- kopf watches FallbackPolicies and Deployments: list and watch (no get: nothing reads one object);
- controller/writer.py writes status through the status subresource: patch (with a resourceVersion precondition; the
  API server answers with the object, so nothing reads status back);
- rollback/deployment.py reads the Deployment, lists (never gets) its ReplicaSets and patches the pod
  template;
  routing/service.py reads the tiers' Deployments for their pod labels;
- routing/service.py reads and patches the Service; routing/istio.py the VirtualService;
  routing/gatewayapi.py the HTTPRoute (JSON patches guarded by resourceVersion, never update/delete);
- audit/events.py creates events.k8s.io/v1 Events (one per episode; never patched or deleted).
No Secrets, ConfigMaps, Pods or deletes anywhere.
*/}}
{{- define "understudy.workloadRules" -}}
- apiGroups: ["understudy.dev"]
  resources: ["fallbackpolicies"]
  verbs: ["list", "watch"]
- apiGroups: ["understudy.dev"]
  resources: ["fallbackpolicies/status"]
  verbs: ["patch"]
# The release finalizer (understudy.dev/release), held only while a policy has traffic or replicas to give back.
- apiGroups: ["understudy.dev"]
  resources: ["fallbackpolicies"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "patch"]
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Cluster-scoped objects get the release namespace in their name, so two releases never collide. */}}
{{- define "understudy.clusterName" -}}
{{- printf "%s-%s" (include "understudy.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* The namespaces an admission policy binding judges: every one cluster-wide, else the watched ones. */}}
{{- define "understudy.admissionScope" -}}
{{- if .Values.watchNamespaces }}
matchResources:
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: In
        values: {{ uniq .Values.watchNamespaces | toJson }}
{{- end }}
{{- end }}
