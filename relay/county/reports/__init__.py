"""Reports: signing keys now; drafts, templates, signing, addenda and delivery next (issue 5)."""
