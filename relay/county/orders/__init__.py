"""Exam orders (申请单): in from the HIS and the registration page, matched to studies."""
