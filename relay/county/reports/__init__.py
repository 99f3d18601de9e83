"""Reports: templates, drafts, signing (keys, verification), addenda, critical results
(危急值) and the delivery of signed reports back to the township."""
