-- Argo CD resource health check for epd-operator.io/EPDCluster.
--
-- Install: put this script under the key
--   resource.customizations.health.epd-operator.io_EPDCluster
-- of the argocd-cm ConfigMap (see README, "GitOps").
--
-- Reads what the operator writes: status.observedGeneration and the Ready / Progressing /
-- Degraded conditions (once reconciled, exactly one is True, except that Ready stays True
-- while a change rolls out within its bound: then Progressing is True too and wins here).
hs = {}

local function condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "EPDCluster is being deleted"
  return hs
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local degraded = condition(obj.status.conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. text(degraded, "")
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
local progressing = condition(obj.status.conditions, "Progressing")
-- Ready stays True while a change rolls out within its bound; Progressing says it is not done.
if progressing ~= nil and progressing.status == "True" then
  -- spec.paused holds a rollout mid-way: Argo CD's word for that is Suspended.
  if progressing.reason == "RolloutPaused" then
    hs.status = "Suspended"
    hs.message = text(progressing, "Rollout paused")
    return hs
  end
  hs.status = "Progressing"
  hs.message = text(progressing, "Rolling out")
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = text(progressing, text(ready, "Not ready yet"))
return hs
