"""Tickets: the rules of xyOps' ticket system (due dates, change history, generated bodies) and the one service
that opens a ticket, shared by the API and the ticket job and alert actions."""
