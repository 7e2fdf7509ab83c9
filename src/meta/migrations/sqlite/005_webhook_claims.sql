-- Webhook deliveries run on several workers (and, later, processes): a worker claims a
-- delivery for one attempt until claimed_until (seconds since the epoch), so no other
-- takes it meanwhile, and a delivery whose worker died falls due again when the lease
-- runs out. NULL: nobody holds it.
ALTER TABLE webhooks ADD COLUMN claimed_until INTEGER;
